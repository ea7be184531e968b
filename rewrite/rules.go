package rewrite

import (
	"fmt"
	"strings"

	"github.com/pgveil/pgveil/config"
)

// Options are the config settings the rewriter depends on.
type Options struct {
	// Mode is config.ModeStrict or config.ModeMigrating ("" = strict). In
	// migrating mode equality lookups also match rows whose blind index is
	// still NULL by their plaintext.
	Mode string
	// OnUnsupported is config.OnUnsupportedReject or
	// config.OnUnsupportedPassthrough ("" = reject). With passthrough, a
	// statement pgveil would refuse is forwarded unchanged (KindPassthrough).
	OnUnsupported string
	// HashFallbacks is the number of fallback hash keys. When > 0 lookups
	// compare the blind index with an array of hashes under every key:
	// email_hash = ANY($k::text[]) with OpHashAll.
	HashFallbacks int
}

// Rules are the configured tables compiled for the rewriter. Immutable.
type Rules struct {
	opts    Options
	tables  []*tableRule
	byQName map[string]*tableRule // "schema.table" (as PostgreSQL stores the names)
	byName  map[string]bool       // table names (as stored), any schema
	names   map[string]struct{}   // lower-cased words of the skip scan (see Mentions)
	maxName int
	lens    uint64 // bit n set: some configured name has n bytes (n < 64)
	// firsts: bit c set when some configured name starts with ASCII byte c
	// (lower case); names starting with a non-ASCII byte set nonASCII.
	firsts   [2]uint64
	nonASCII bool
}

type tableRule struct {
	schema, name string
	qname        string // schema.name
	cols         map[string]*colRule
	hashCols     map[string]*colRule // blind index column -> encrypted column
	order        []*colRule          // config order
}

type colRule struct {
	table  *tableRule
	name   string
	blind  string
	domain string
	label  string // "table.column" for Action.Column
}

func (c *colRule) searchable() bool { return c.blind != "" }

// Compile checks and compiles the configured tables.
func Compile(tables []config.Table, opts Options) (*Rules, error) {
	switch opts.Mode {
	case "", config.ModeStrict, config.ModeMigrating:
	default:
		return nil, fmt.Errorf("pgveil: unknown encryption mode %q (want %s or %s)", opts.Mode, config.ModeStrict, config.ModeMigrating)
	}
	switch opts.OnUnsupported {
	case "", config.OnUnsupportedReject, config.OnUnsupportedPassthrough:
	default:
		return nil, fmt.Errorf("pgveil: unknown on_unsupported %q (want %s or %s)", opts.OnUnsupported, config.OnUnsupportedReject, config.OnUnsupportedPassthrough)
	}
	if opts.HashFallbacks < 0 {
		return nil, fmt.Errorf("pgveil: negative number of fallback hash keys")
	}
	r := &Rules{opts: opts, byQName: map[string]*tableRule{}, byName: map[string]bool{}, names: map[string]struct{}{}}
	for _, t := range tables {
		schema, name := t.Schema, t.Name
		if name == "" {
			if i := strings.IndexByte(t.Table, '.'); i >= 0 {
				schema, name = t.Table[:i], t.Table[i+1:]
			} else {
				name = t.Table
			}
		}
		if schema == "" {
			schema = "public"
		}
		if name == "" {
			return nil, fmt.Errorf("pgveil: a configured table has no name")
		}
		tr := &tableRule{schema: schema, name: name, qname: schema + "." + name,
			cols: map[string]*colRule{}, hashCols: map[string]*colRule{}}
		if _, dup := r.byQName[tr.qname]; dup {
			return nil, fmt.Errorf("pgveil: table %s is configured twice", tr.qname)
		}
		if len(t.Columns) == 0 {
			return nil, fmt.Errorf("pgveil: table %s has no columns", tr.qname)
		}
		for _, c := range t.Columns {
			if c.Column == "" {
				return nil, fmt.Errorf("pgveil: table %s has a column without a name", tr.qname)
			}
			if _, dup := tr.cols[c.Column]; dup {
				return nil, fmt.Errorf("pgveil: column %s.%s is configured twice", tr.qname, c.Column)
			}
			cr := &colRule{table: tr, name: c.Column, blind: c.BlindIndex, domain: c.HashDomain,
				label: name + "." + c.Column}
			if cr.domain == "" {
				cr.domain = tr.qname + "." + c.Column
			}
			tr.cols[c.Column] = cr
			tr.order = append(tr.order, cr)
		}
		for _, c := range tr.order {
			if c.blind == "" {
				continue
			}
			if _, clash := tr.cols[c.blind]; clash {
				return nil, fmt.Errorf("pgveil: blind index %s.%s is also an encrypted column", tr.qname, c.blind)
			}
			if _, dup := tr.hashCols[c.blind]; dup {
				return nil, fmt.Errorf("pgveil: blind index %s.%s serves two columns", tr.qname, c.blind)
			}
			tr.hashCols[c.blind] = c
		}
		r.byQName[tr.qname] = tr
		r.byName[name] = true
		r.tables = append(r.tables, tr)
		r.addWord(name)
	}
	if len(r.tables) > 0 {
		for _, w := range searchPathWords {
			r.addWord(w)
		}
	}
	return r, nil
}

// searchPathWords are words of the statements that may change which table
// a name without a schema resolves to (see Plan.SearchPathChange): the skip
// scan lets them through to the analyzer, which tells.
//
// set_config may be given its setting name as a parameter, and a schema
// created, dropped or renamed may hide or show a table of a configured
// name without naming it.
var searchPathWords = []string{"search_path", "role", "authorization", "reset", "discard", "set_config", "schema"}

// addWord adds a word to the skip scan.
func (r *Rules) addWord(w string) {
	ln := strings.ToLower(w)
	r.names[ln] = struct{}{}
	if len(ln) < 64 {
		r.lens |= 1 << uint(len(ln))
	}
	if len(ln) > r.maxName {
		r.maxName = len(ln)
	}
	if ln != "" {
		if c := ln[0]; c < 128 {
			r.firsts[c>>6] |= 1 << (c & 63)
		} else {
			r.nonASCII = true
		}
	}
}

// hasName reports whether some configured table, in any schema, has this
// name.
func (r *Rules) hasName(name string) bool { return r.byName[name] }

// Options returns the options the rules were compiled with.
func (r *Rules) Options() Options { return r.opts }

func (r *Rules) migrating() bool { return r.opts.Mode == config.ModeMigrating }

func (r *Rules) passthroughUnsupported() bool {
	return r.opts.OnUnsupported == config.OnUnsupportedPassthrough
}

// Mentions reports whether sql may touch a configured table or change how
// the session resolves table names: whether any configured table name, or
// a word of searchPathWords, appears in it as a word (case-insensitively, in
// identifiers, quoted identifiers, comments or strings alike). A false
// answer is exact: the statement cannot touch a configured table. It does
// not parse and does not allocate.
func (r *Rules) Mentions(sql string) bool {
	if len(r.names) == 0 {
		return false
	}
	var buf [64]byte
	max := r.maxName
	if max > len(buf) {
		max = len(buf)
	}
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		if !isIdentStart(c) {
			continue
		}
		if i > 0 && isIdentCont(sql[i-1]) {
			continue
		}
		j := i + 1
		for j < len(sql) && isIdentCont(sql[j]) {
			j++
		}
		// U&"..." identifiers can spell any name with escapes.
		if (c == 'u' || c == 'U') && j == i+1 && j+1 < len(sql) && sql[j] == '&' && sql[j+1] == '"' {
			return true
		}
		if n := j - i; n <= max && r.lens&(1<<uint(n)) != 0 && r.mayStart(c) {
			if _, ok := r.names[string(lowerWord(buf[:], sql[i:j]))]; ok {
				return true
			}
		}
		i = j - 1
	}
	if r.maxName > len(buf) {
		// very long configured names: slow path
		ls := strings.ToLower(sql)
		for n := range r.names {
			if len(n) > len(buf) && strings.Contains(ls, n) {
				return true
			}
		}
	}
	return false
}

// mentionsTable reports whether text names a configured table as a word
// (Mentions without the words of searchPathWords).
func (r *Rules) mentionsTable(text string) bool {
	if !r.Mentions(text) {
		return false
	}
	lt := strings.ToLower(text)
	for _, t := range r.tables {
		ln := strings.ToLower(t.name)
		for i := strings.Index(lt, ln); i >= 0; {
			end := i + len(ln)
			if (i == 0 || !isIdentCont(lt[i-1])) && (end == len(lt) || !isIdentCont(lt[end])) {
				return true
			}
			j := strings.Index(lt[i+1:], ln)
			if j < 0 {
				break
			}
			i += 1 + j
		}
	}
	return false
}

// mayStart reports whether a configured name can start with c (either
// case): most words of a statement are ruled out without a map lookup.
func (r *Rules) mayStart(c byte) bool {
	if c >= 128 {
		return r.nonASCII
	}
	if 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	return r.firsts[c>>6]&(1<<(c&63)) != 0
}

// table finds a configured table by schema ("" = public) and name.
func (r *Rules) table(schema, name string) *tableRule {
	if schema == "" {
		schema = "public"
	}
	// avoid allocating the key on the common path
	for _, t := range r.tables {
		if t.name == name && t.schema == schema {
			return t
		}
	}
	return nil
}
