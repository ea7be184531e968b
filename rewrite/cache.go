package rewrite

import (
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// CacheResult says how Rewriter.Plan found its plan; the proxy counts it
// (pgveil_plan_cache_lookups_total{result}).
type CacheResult uint8

const (
	CacheSkip CacheResult = iota // the text names no configured table; not parsed, not cached
	CacheHit                     // the plan came from the cache
	CacheMiss                    // the text was analyzed (and the plan cached)
)

func (c CacheResult) String() string {
	switch c {
	case CacheHit:
		return "hit"
	case CacheMiss:
		return "miss"
	}
	return "skip"
}

// passthroughPlan is the shared plan of every statement that touches no
// configured table. Never modify it.
var passthroughPlan = &Plan{Kind: KindPassthrough}

// Cache is a bounded, sharded LRU of plans keyed by normalized SQL. It is
// safe for concurrent use.
type Cache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

const cacheShards = 16

type cacheShard struct {
	mu   sync.Mutex
	m    map[string]*cacheEntry
	head cacheEntry // sentinel: head.next is the most recent
	cap  int
}

type cacheEntry struct {
	key        string
	plan       *Plan
	exact      bool // the plan is valid only for this exact text (see Rewriter.Plan)
	prev, next *cacheEntry
}

// NewCache returns a cache holding at most size plans (at least one per shard).
func NewCache(size int) *Cache {
	c := &Cache{seed: maphash.MakeSeed()}
	per := (size + cacheShards - 1) / cacheShards
	if per < 1 {
		per = 1
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.m = make(map[string]*cacheEntry)
		s.head.next, s.head.prev = &s.head, &s.head
		s.cap = per
	}
	return c
}

func (c *Cache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

func (c *Cache) get(key string) (*Plan, bool, bool) {
	s := c.shard(key)
	s.mu.Lock()
	e := s.m[key]
	if e == nil {
		s.mu.Unlock()
		return nil, false, false
	}
	if s.head.next != e {
		e.prev.next, e.next.prev = e.next, e.prev
		e.next, e.prev = s.head.next, &s.head
		s.head.next.prev = e
		s.head.next = e
	}
	p, exact := e.plan, e.exact
	s.mu.Unlock()
	return p, exact, true
}

func (c *Cache) put(key string, p *Plan, exact bool) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[key]; e != nil {
		e.plan, e.exact = p, exact
		return
	}
	e := &cacheEntry{key: key, plan: p, exact: exact}
	e.next, e.prev = s.head.next, &s.head
	s.head.next.prev = e
	s.head.next = e
	s.m[key] = e
	for len(s.m) > s.cap {
		last := s.head.prev
		last.prev.next, s.head.prev = &s.head, last.prev
		delete(s.m, last.key)
	}
}

// Len returns the number of cached plans.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Rewriter is compiled Rules plus a plan cache: one config generation.
// Safe for concurrent use.
type Rewriter struct {
	rules *Rules
	cache *Cache
}

// New returns a Rewriter over rules with a cache of cacheSize plans
// (config.Proxy.PlanCacheSize).
func New(rules *Rules, cacheSize int) *Rewriter {
	return &Rewriter{rules: rules, cache: NewCache(cacheSize)}
}

// Rules returns the rules the rewriter was built from.
func (r *Rewriter) Rules() *Rules { return r.rules }

// Cache returns the rewriter's plan cache.
func (r *Rewriter) Cache() *Cache { return r.cache }

// Plan analyzes one statement text (a Query message, or a Parse message's
// query) and returns its plan, the literals the normalizer extracted from
// sql (Slots index into them; pass both to Plan.Render), and how the cache
// answered.
//
// A text that names no configured table is not parsed: it gets the shared
// KindPassthrough plan and CacheSkip. Everything else is normalized and
// looked up by its normalized text; on a miss it is parsed and analyzed.
// Refusals come back as KindRefuse plans (cached like any other). A text
// that names a configured table but does not parse is refused with
// SQLSTATE 42601 rather than forwarded, so that a statement pgveil cannot
// understand never carries plaintext aimed at an encrypted column to
// PostgreSQL (which would also echo it into its log); with
// on_unsupported: passthrough it is forwarded and PostgreSQL reports its
// own syntax error.
//
// err is non-nil only when the analyzer hit an internal inconsistency (a
// pgveil bug); the proxy must then answer XX000 and forward nothing.
func (r *Rewriter) Plan(sql string) (*Plan, []Literal, CacheResult, error) {
	return r.PlanScratch(sql, nil)
}

// Scratch is memory PlanScratch reuses from one call to the next, so a
// cache hit allocates nothing. One goroutine at a time; the literals
// PlanScratch returns live in it until the next call.
type Scratch struct {
	// SearchPath is the session's resolution of table names without a
	// schema (nil: public); the caller sets it, plans are made and cached
	// for it.
	SearchPath *SearchPath

	lits []Literal
	key  []byte
	// memo is the last statement shape planned with this scratch: the
	// same text with other constants (an application repeating a query
	// with new values inlined) reuses its plan without the lexer, the
	// key or the cache (see planMemo.match).
	memo planMemo
}

// planMemo is a statement's text, its constants and its plan.
type planMemo struct {
	r     *Rewriter
	sp    *SearchPath
	plan  *Plan
	sql   []byte // a copy
	lits  []Literal
	kinds []tokKind
	types []byte // constType of each constant
}

// maxMemoSQL bounds the text a Scratch keeps for its memo.
const maxMemoSQL = 8 << 10

// remember makes sql, planned by r as p with constants lits, the memo.
func (m *planMemo) remember(r *Rewriter, sp *SearchPath, p *Plan, sql string, lits []Literal) {
	if len(sql) > maxMemoSQL {
		m.plan = nil
		return
	}
	m.r, m.sp, m.plan = r, sp, p
	m.sql = append(m.sql[:0], sql...)
	m.lits = append(m.lits[:0], lits...)
	m.kinds, m.types = m.kinds[:0], m.types[:0]
	for _, l := range lits {
		lx := lexer{s: sql, pos: l.Start}
		m.kinds = append(m.kinds, lx.next().kind)
		m.types = append(m.types, constType(sql, l))
	}
}

// match reports whether sql is the memo's text with other constants: the
// text between the constants is the same byte for byte, and at each
// constant's place the lexer reads one constant of the same kind and type
// (constType). The lexer then reads sql exactly as it read the memo's text (it reads a
// token from where it starts, whatever came before), so scanConstants
// would find these constants, the cache key would be the memo's and so
// would the plan. It appends the constants' spans in sql to out.
func (m *planMemo) match(sql string, out []Literal) ([]Literal, bool) {
	msql := m.sql
	prev, pos := 0, 0
	for i, ml := range m.lits {
		seg := msql[prev:ml.Start]
		if len(sql)-pos < len(seg) || sql[pos:pos+len(seg)] != string(seg) {
			return out, false
		}
		pos += len(seg)
		lx := lexer{s: sql, pos: pos}
		t := lx.next()
		if t.kind != m.kinds[i] || t.end <= t.start {
			return out, false
		}
		lit := Literal{Start: t.start, End: t.end}
		if constType(sql, lit) != m.types[i] {
			return out, false
		}
		out = append(out, lit)
		pos, prev = t.end, ml.End
	}
	return out, sql[pos:] == string(msql[prev:])
}

// PlanScratch is Plan with caller-owned scratch memory (nil: none). Nothing
// it returns or caches refers to sql's memory (a miss plans from a copy),
// so sql may be a view of a buffer the caller reuses once it has rendered
// the plan.
func (r *Rewriter) PlanScratch(sql string, sc *Scratch) (*Plan, []Literal, CacheResult, error) {
	if sc != nil && sc.memo.plan != nil && sc.memo.r == r && sc.memo.sp == sc.SearchPath {
		// The memo's text names a configured table (it was planned), and
		// a match has the same words: no need to ask Mentions.
		if lits, ok := sc.memo.match(sql, sc.lits[:0]); ok {
			sc.lits = lits
			if len(lits) == 0 {
				lits = nil
			}
			return sc.memo.plan, lits, CacheHit, nil
		}
	}
	if !r.rules.Mentions(sql) {
		return passthroughPlan, nil, CacheSkip, nil
	}
	if sc == nil {
		sc = &Scratch{}
	}
	sp := sc.SearchPath
	lits, maxParam := scanConstants(sql, sc.lits[:0])
	sc.lits = lits
	if len(lits) == 0 {
		lits = nil
	}
	// The normalized text alone does not say which placeholders were the
	// client's parameters and which were constants ("VALUES ($1, 20)" and
	// "VALUES ('a', 20)" both read "VALUES ($1, $2)"); the cache key adds
	// how many constants were cut out, which settles it.
	kb := appendNormalized(sc.key[:0], sql, lits, maxParam)
	normLen := len(kb)
	kb = append(kb, 0)
	kb = strconv.AppendInt(kb, int64(len(lits)), 10)
	// `email = 42` has no operator in PostgreSQL, `email = '42'` has one:
	// constants of other types than string are part of the key.
	kb = appendConstTypes(kb, sql, lits)
	if sp != nil {
		// another session's resolution of unqualified names, another plan
		kb = append(kb, 0)
		kb = append(kb, sp.id...)
	}
	sc.key = kb
	// A view of the scratch bytes for the lookup only: get does not keep it.
	view := unsafe.String(unsafe.SliceData(kb), len(kb))
	if p, exact, ok := r.cache.get(view); ok {
		if !exact {
			sc.memo.remember(r, sp, p, sql, lits)
			return p, lits, CacheHit, nil
		}
		if p, _, ok := r.cache.get(exactKey(sql, sp)); ok {
			return p, lits, CacheHit, nil
		}
	}
	key, ckey := string(kb[:normLen]), string(kb)
	sql = strings.Clone(sql)
	p, exact, err := r.rules.analyze(sql, key, lits, sp)
	if err != nil {
		return nil, nil, CacheMiss, err
	}
	if exact {
		// The normalized text did not parse (a constant where PostgreSQL's
		// grammar wants one, e.g. `SET x TO 'y'`): the plan was made from
		// the original text and may depend on its constants, so it is
		// cached by the exact text; the normalized key only records that.
		r.cache.put(ckey, p, true)
		r.cache.put(exactKey(sql, sp), p, false)
	} else {
		r.cache.put(ckey, p, false)
		sc.memo.remember(r, sp, p, sql, lits)
	}
	return p, lits, CacheMiss, nil
}

func exactKey(sql string, sp *SearchPath) string {
	if sp != nil {
		return "\x00" + sp.id + "\x00" + sql
	}
	return "\x00" + sql
}

// Analyze plans sql without a cache; see Rewriter.Plan.
func (r *Rules) Analyze(sql string) (*Plan, []Literal, error) {
	return r.AnalyzeIn(sql, nil)
}

// AnalyzeIn is Analyze for a session whose search path resolves names as sp.
func (r *Rules) AnalyzeIn(sql string, sp *SearchPath) (*Plan, []Literal, error) {
	if !r.Mentions(sql) {
		return passthroughPlan, nil, nil
	}
	key, lits := Normalize(sql)
	p, _, err := r.analyze(sql, key, lits, sp)
	if err != nil {
		return nil, nil, err
	}
	return p, lits, nil
}

// bugError is an internal inconsistency found while analyzing.
type bugError struct{ msg string }

func (e *bugError) Error() string { return "pgveil: BUG: rewrite: " + e.msg }

func bugf(format string, args ...any) *bugError {
	return &bugError{msg: fmt.Sprintf(format, args...)}
}
