package backfill

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/config"
)

// pgveil recognises a configured table only by its name. A statement
// addressed to a partition or inheritance child of a configured table, to
// its parent, or to a view over it is not seen as touching it: values
// written through it are stored as plaintext and lookups through it miss.
// Server-side code (triggers, rules, functions) writes around pgveil
// altogether. checkShapes finds those schema shapes.

// relation is a configured table or view found in the catalog.
type relation struct {
	cfg config.Table
	st  *tableState
}

func (r *relation) full() string { return r.st.schema + "." + r.st.name }

func (r *relation) col(name string) (config.Column, bool) {
	for _, c := range r.cfg.Columns {
		if c.Column == name {
			return c, true
		}
	}
	return config.Column{}, false
}

// colByBlindIndex finds the configured column whose blind index is name.
func (r *relation) colByBlindIndex(name string) (config.Column, bool) {
	for _, c := range r.cfg.Columns {
		if c.Searchable() && c.BlindIndex == name {
			return c, true
		}
	}
	return config.Column{}, false
}

func (r *relation) what() string {
	switch r.st.kind {
	case "v":
		return "view"
	case "m":
		return "materialized view"
	}
	return "table"
}

// snippet is a config entry for column c as name with c's blind index
// (as blind, when set) and hash domain.
func snippet(name string, c config.Column, blind, domain string) string {
	s := "{column: " + name
	if c.Searchable() {
		if blind == "" {
			blind = c.BlindIndex
		}
		s += ", blind_index: " + blind
	}
	return s + ", hash_domain: " + domain + "}"
}

func snippets(r *relation) string {
	var parts []string
	for _, c := range r.cfg.Columns {
		parts = append(parts, snippet(c.Column, c, "", domainOf(r.cfg, c)))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

type shapeCheck struct {
	ctx   context.Context
	pool  *pgxpool.Pool
	rels  []*relation
	byOID map[uint32]*relation
	names map[uint32]string // schema.name of relations looked up
	probs []Problem
	info  []string
	seen  map[string]bool
}

func (s *shapeCheck) problem(what, fix string) {
	if s.seen[what] {
		return
	}
	s.seen[what] = true
	s.probs = append(s.probs, Problem{What: what, Fix: fix})
}

func (s *shapeCheck) note(n string) {
	if s.seen[n] {
		return
	}
	s.seen[n] = true
	s.info = append(s.info, n)
}

func (s *shapeCheck) oids(views bool) []uint32 {
	var out []uint32
	for _, r := range s.rels {
		if views || !r.st.view() {
			out = append(out, r.st.oid)
		}
	}
	return out
}

// relName names a relation schema.name.
func (s *shapeCheck) relName(oid uint32) (string, error) {
	if r, ok := s.byOID[oid]; ok {
		return r.full(), nil
	}
	if n, ok := s.names[oid]; ok {
		return n, nil
	}
	var n string
	err := s.pool.QueryRow(s.ctx, `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, oid).Scan(&n)
	if err != nil {
		return "", fmt.Errorf("pgveil: looking up relation %d: %w", oid, err)
	}
	s.names[oid] = n
	return n, nil
}

// attName names column num of relation oid.
func (s *shapeCheck) attName(oid uint32, num int16) (string, error) {
	if r, ok := s.byOID[oid]; ok {
		return r.st.byNum[num], nil
	}
	var n string
	err := s.pool.QueryRow(s.ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum = $2`, oid, num).Scan(&n)
	if err != nil {
		return "", fmt.Errorf("pgveil: looking up column %d of relation %d: %w", num, oid, err)
	}
	return n, nil
}

// checkShapes returns the problems of partitions, inheritance children and
// parents, and views of the configured relations, and notes on server-side
// code that writes or reads them.
func checkShapes(ctx context.Context, pool *pgxpool.Pool, rels []*relation) ([]Problem, []string, error) {
	s := &shapeCheck{ctx: ctx, pool: pool, rels: rels, byOID: map[uint32]*relation{}, names: map[uint32]string{}, seen: map[string]bool{}}
	for _, r := range rels {
		s.byOID[r.st.oid] = r
	}
	if len(rels) == 0 {
		return nil, nil, nil
	}
	for _, f := range []func() error{s.descendants, s.ancestors, s.views, s.serverCode} {
		if err := f(); err != nil {
			return nil, nil, err
		}
	}
	return s.probs, s.info, nil
}

// descendants: every partition (any depth) and inheritance child of a
// configured table must be configured the same way.
func (s *shapeCheck) descendants() error {
	rows, err := s.pool.Query(s.ctx, `WITH RECURSIVE d(relid, anc, depth) AS (
			SELECT inhrelid, inhparent, 1 FROM pg_inherits WHERE inhparent = ANY($1::oid[])
			UNION ALL
			SELECT i.inhrelid, d.anc, d.depth + 1 FROM pg_inherits i JOIN d ON i.inhparent = d.relid)
		SELECT d.relid, d.anc, n.nspname || '.' || c.relname, c.relispartition FROM d
		JOIN pg_class c ON c.oid = d.relid JOIN pg_namespace n ON n.oid = c.relnamespace
		ORDER BY n.nspname, c.relname, d.depth`, s.oids(false))
	if err != nil {
		return fmt.Errorf("pgveil: looking up partitions and inheritance children: %w", err)
	}
	type pair struct {
		desc, anc uint32
		name      string
		partition bool
	}
	var pairs []pair
	for rows.Next() {
		var p pair
		if err := rows.Scan(&p.desc, &p.anc, &p.name, &p.partition); err != nil {
			return err
		}
		pairs = append(pairs, p)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgveil: looking up partitions and inheritance children: %w", err)
	}
	reported := map[uint32]bool{}
	for _, p := range pairs {
		anc := s.byOID[p.anc]
		word := "inheritance child"
		if p.partition {
			word = "partition"
		}
		if reported[p.desc] {
			// Compared with, or named with, its nearest configured
			// ancestor (which is compared with its own).
			continue
		}
		reported[p.desc] = true
		if child, ok := s.byOID[p.desc]; ok {
			s.compare(anc, child, word)
			continue
		}
		ex := ""
		if len(anc.cfg.Columns) > 0 {
			c := anc.cfg.Columns[0]
			ex = " (e.g. hash_domain: " + domainOf(anc.cfg, c) + ")"
		}
		article := "a "
		if !p.partition {
			article = "an "
		}
		s.problem(fmt.Sprintf("table %s is %s%s of configured table %s: statements addressed to it directly are not encrypted", p.name, article, word, anc.full()),
			fmt.Sprintf("configure it too, with the same columns and hash_domain: %s's%s: - table: %s, columns: %s; or never address it directly",
				anc.full(), ex, p.name, snippets(anc)))
	}
	return nil
}

// compare: a configured partition or child must encrypt the columns it
// shares with its configured ancestor exactly as the ancestor does.
func (s *shapeCheck) compare(anc, child *relation, word string) {
	A, C := anc.full(), child.full()
	for _, ac := range anc.cfg.Columns {
		ad := domainOf(anc.cfg, ac)
		cc, ok := child.col(ac.Column)
		switch {
		case !ok:
			s.problem(fmt.Sprintf("encrypted column %s.%s is not configured on its %s %s: values written through %s are stored as plaintext and lookups through %s miss them", A, ac.Column, word, C, C, A),
				fmt.Sprintf("add %s to the columns of %s in the config", snippet(ac.Column, ac, "", ad), C))
		case cc.BlindIndex != ac.BlindIndex:
			s.problem(fmt.Sprintf("blind_index of %s.%s (%s) differs from that of %s.%s (%s), whose %s it is: rows written through one have no blind index where lookups through the other look",
				C, cc.Column, orNone(cc.BlindIndex), A, ac.Column, orNone(ac.BlindIndex), word),
				fmt.Sprintf("configure %s.%s as %s", C, cc.Column, snippet(ac.Column, ac, "", ad)))
		case domainOf(child.cfg, cc) != ad:
			s.problem(fmt.Sprintf("hash_domain of %s.%s is %s but that of %s.%s, whose %s it is, is %s: lookups through %s would miss rows written through %s, and the other way round",
				C, cc.Column, domainOf(child.cfg, cc), A, ac.Column, word, ad, A, C),
				fmt.Sprintf("set hash_domain: %s on %s.%s in the config", ad, C, cc.Column))
		}
	}
	for _, cc := range child.cfg.Columns {
		if _, ok := anc.col(cc.Column); ok {
			continue
		}
		if _, inherited := anc.st.attrs[cc.Column]; !inherited {
			continue // the child's own column
		}
		s.problem(fmt.Sprintf("column %s.%s is encrypted but %s.%s, whose %s it is, is not: reads through %s return %s's tokens and writes through %s store plaintext there", C, cc.Column, A, cc.Column, word, A, C, A),
			fmt.Sprintf("configure %s.%s the same way (%s), or remove it from the columns of %s", A, cc.Column, snippet(cc.Column, cc, "", domainOf(child.cfg, cc)), C))
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// ancestors: the parent of a configured partition or child, at any depth,
// must be configured too: writes through it land in the configured table
// unencrypted, and reads through it return the configured table's tokens.
func (s *shapeCheck) ancestors() error {
	rows, err := s.pool.Query(s.ctx, `WITH RECURSIVE a(relid, anc) AS (
			SELECT inhrelid, inhparent FROM pg_inherits WHERE inhrelid = ANY($1::oid[])
			UNION ALL
			SELECT a.relid, i.inhparent FROM pg_inherits i JOIN a ON i.inhrelid = a.anc)
		SELECT DISTINCT a.relid, a.anc, n.nspname || '.' || c.relname, ch.relispartition FROM a
		JOIN pg_class c ON c.oid = a.anc JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_class ch ON ch.oid = a.relid
		ORDER BY 3, 1`, s.oids(false))
	if err != nil {
		return fmt.Errorf("pgveil: looking up parents of configured tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rel, anc uint32
		var name string
		var partition bool
		if err := rows.Scan(&rel, &anc, &name, &partition); err != nil {
			return err
		}
		if _, ok := s.byOID[anc]; ok {
			continue // compared in descendants
		}
		child := s.byOID[rel]
		word := "an inheritance child"
		if partition {
			word = "a partition"
		}
		s.problem(fmt.Sprintf("configured table %s is %s of table %s, which is not configured: statements addressed to %s are not encrypted, so writes through it store plaintext in %s and reads through it return its tokens", child.full(), word, name, name, child.full()),
			fmt.Sprintf("configure %s too, with the same columns and hash_domain as %s (- table: %s, columns: %s), or never address it directly", name, child.full(), name, snippets(child)))
	}
	return rows.Err()
}

// origin is where a view's column comes from: a column of a relation, or
// nothing (an expression).
type origin struct {
	rel uint32
	num int16
}

// viewOrigins maps each column of view oid to its origin, by describing the
// view's query: PostgreSQL names the origin of each plain column
// reference, as it does for the proxy. ok is false when it cannot.
func (s *shapeCheck) viewOrigins(oid uint32, attrs map[int16]string) (map[string]origin, bool) {
	var def string
	if err := s.pool.QueryRow(s.ctx, `SELECT pg_get_viewdef($1::oid)`, oid).Scan(&def); err != nil {
		return nil, false
	}
	def = strings.TrimRight(strings.TrimSpace(def), ";")
	conn, err := s.pool.Acquire(s.ctx)
	if err != nil {
		return nil, false
	}
	defer conn.Release()
	sd, err := conn.Conn().PgConn().Prepare(s.ctx, "", def, nil)
	if err != nil || len(sd.Fields) != len(attrs) {
		return nil, false
	}
	nums := make([]int16, 0, len(attrs))
	for n := range attrs {
		nums = append(nums, n)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	out := map[string]origin{}
	for i, f := range sd.Fields {
		out[attrs[nums[i]]] = origin{rel: f.TableOID, num: int16(f.TableAttributeNumber)}
	}
	return out, true
}

// viewRead is an encrypted column of a configured relation a view reads.
type viewRead struct {
	base *relation
	col  config.Column
	num  int16
}

// views: a view (or materialized view) that reads an encrypted column of a
// configured relation must be configured with the same columns and hash
// domains; a configured view must agree with the relations it reads.
func (s *shapeCheck) views() error {
	rows, err := s.pool.Query(s.ctx, `SELECT DISTINCT r.ev_class, n.nspname || '.' || v.relname, v.relkind::text, d.refobjid, d.refobjsubid
		FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
		JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace n ON n.oid = v.relnamespace
		WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY($1::oid[]) AND d.refobjid <> r.ev_class
			AND r.rulename = '_RETURN' AND v.relkind IN ('v', 'm')
		ORDER BY 2, 4, 5`, s.oids(true))
	if err != nil {
		return fmt.Errorf("pgveil: looking up views of configured tables: %w", err)
	}
	type view struct {
		oid   uint32
		name  string
		kind  string
		reads []viewRead
	}
	var order []*view
	byOID := map[uint32]*view{}
	for rows.Next() {
		var v view
		var base uint32
		var num int16
		if err := rows.Scan(&v.oid, &v.name, &v.kind, &base, &num); err != nil {
			rows.Close()
			return err
		}
		w, ok := byOID[v.oid]
		if !ok {
			w = &v
			byOID[v.oid] = w
			order = append(order, w)
		}
		b := s.byOID[base]
		for _, c := range b.cfg.Columns {
			if a, ok := b.st.attrs[c.Column]; ok && (num == 0 || a.num == num) {
				w.reads = append(w.reads, viewRead{base: b, col: c, num: a.num})
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgveil: looking up views of configured tables: %w", err)
	}
	// Configured views that read no configured relation are checked too.
	for _, r := range s.rels {
		if r.st.view() && byOID[r.st.oid] == nil {
			v := &view{oid: r.st.oid, name: r.full(), kind: r.st.kind}
			byOID[v.oid] = v
			order = append(order, v)
		}
	}
	for _, v := range order {
		var attrs map[int16]string
		if r, ok := s.byOID[v.oid]; ok {
			attrs = r.st.byNum
		} else {
			attrs, err = s.viewAttrs(v.oid)
			if err != nil {
				return err
			}
		}
		origins, ok := s.viewOrigins(v.oid, attrs)
		if !ok {
			// Fall back on names: a view column named like a column it
			// reads comes from it.
			origins = map[string]origin{}
			for _, rd := range v.reads {
				for _, n := range attrs {
					if n == rd.col.Column {
						origins[n] = origin{rel: rd.base.st.oid, num: rd.num}
					}
				}
			}
		}
		if err := s.checkView(v.oid, v.name, v.kind, v.reads, attrs, origins); err != nil {
			return err
		}
	}
	return nil
}

func (s *shapeCheck) viewAttrs(oid uint32) (map[int16]string, error) {
	rows, err := s.pool.Query(s.ctx, `SELECT attnum, attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, oid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int16]string{}
	for rows.Next() {
		var n int16
		var name string
		if err := rows.Scan(&n, &name); err != nil {
			return nil, err
		}
		out[n] = name
	}
	return out, rows.Err()
}

// exposedAs is the view column whose origin is column num of rel, "".
func exposedAs(origins map[string]origin, attrs map[int16]string, rel uint32, num int16) string {
	// In attnum order, so that the first such column is named.
	nums := make([]int16, 0, len(attrs))
	for n := range attrs {
		nums = append(nums, n)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	for _, n := range nums {
		if o, ok := origins[attrs[n]]; ok && o.rel == rel && o.num == num {
			return attrs[n]
		}
	}
	return ""
}

func (s *shapeCheck) checkView(oid uint32, name, kind string, reads []viewRead, attrs map[int16]string, origins map[string]origin) error {
	what := "view"
	risk := "writes through it (an updatable view) store plaintext and lookups through it miss"
	if kind == "m" {
		what = "materialized view"
		risk = "reads through it return tokens and lookups through it miss"
	}
	v, configured := s.byOID[oid]
	// blindAs is the view column exposing rd's blind index, "".
	blindAs := func(rd viewRead) string {
		if !rd.col.Searchable() {
			return ""
		}
		if a, ok := rd.base.st.attrs[rd.col.BlindIndex]; ok {
			return exposedAs(origins, attrs, rd.base.st.oid, a.num)
		}
		return ""
	}
	for _, rd := range reads {
		T := rd.base.full()
		domain := domainOf(rd.base.cfg, rd.col)
		as := exposedAs(origins, attrs, rd.base.st.oid, rd.num)
		if as == "" {
			// Read in WHERE, JOIN or an expression, not shown as such.
			s.note(fmt.Sprintf("%s %s reads encrypted column %s.%s other than as one of its columns (in WHERE, JOIN or an expression): it sees tokens there, not plaintext, so comparisons and functions on it do not work as they did on plaintext",
				what, name, T, rd.col.Column))
			continue
		}
		blind := blindAs(rd)
		want := snippet(as, rd.col, blind, domain)
		if !configured {
			fix := fmt.Sprintf("configure the %s with the same columns and hash_domain as %s (hash_domain: %s): - table: %s, columns: [%s]", what, T, domain, name, want)
			if rd.col.Searchable() && blind == "" {
				fix += fmt.Sprintf(", exposing %s's blind index %s as a column of the view", T, rd.col.BlindIndex)
			}
			s.problem(fmt.Sprintf("%s %s reads encrypted column %s.%s: %s", what, name, T, rd.col.Column, risk), fix+"; or drop/replace it")
			continue
		}
		vc, ok := v.col(as)
		switch {
		case !ok:
			s.problem(fmt.Sprintf("%s %s exposes encrypted column %s.%s as %s, which its config does not encrypt: reads through it return tokens and writes through it store plaintext", what, name, T, rd.col.Column, as),
				fmt.Sprintf("add %s to the columns of %s in the config", want, name))
		case domainOf(v.cfg, vc) != domain:
			s.problem(fmt.Sprintf("hash_domain of %s.%s is %s but that of %s.%s, which it shows, is %s: lookups through the view miss rows written through %s, and the other way round", name, as, domainOf(v.cfg, vc), T, rd.col.Column, domain, T),
				fmt.Sprintf("set hash_domain: %s on %s.%s in the config", domain, name, as))
		case rd.col.Searchable() && !vc.Searchable():
			s.problem(fmt.Sprintf("%s.%s has no blind_index but %s.%s, which it shows, has %s: rows written through the view get no blind index, so lookups on %s miss them", name, as, T, rd.col.Column, rd.col.BlindIndex, T),
				fmt.Sprintf("configure %s.%s as %s", name, as, want))
		case !rd.col.Searchable() && vc.Searchable():
			s.problem(fmt.Sprintf("%s.%s has blind_index %s but %s.%s, which it shows, has none", name, as, vc.BlindIndex, T, rd.col.Column),
				fmt.Sprintf("remove blind_index from %s.%s, or give %s.%s a blind_index too (and the view a column for it)", name, as, T, rd.col.Column))
		case vc.Searchable() && blind != vc.BlindIndex:
			s.problem(fmt.Sprintf("blind index %s of %s.%s is not %s's blind index %s: lookups through the view would compare the wrong column", vc.BlindIndex, name, as, T, rd.col.BlindIndex),
				fmt.Sprintf("configure %s.%s as %s", name, as, want))
		}
	}
	if !configured {
		return nil
	}
	// The configured view's own columns must come from configured columns.
	var bases []string
	seenBase := map[uint32]bool{}
	for _, rd := range reads {
		if !seenBase[rd.base.st.oid] {
			seenBase[rd.base.st.oid] = true
			bases = append(bases, rd.base.full())
		}
	}
	for _, vc := range v.cfg.Columns {
		o, ok := origins[vc.Column]
		if !ok || o.rel == 0 {
			continue // an expression (or not a column: reported by plan)
		}
		if b, ok := s.byOID[o.rel]; ok {
			if _, enc := b.col(b.st.byNum[o.num]); enc {
				continue // compared above
			}
			if !seenBase[o.rel] {
				seenBase[o.rel] = true
				bases = append(bases, b.full())
			}
		}
		T, err := s.relName(o.rel)
		if err != nil {
			return err
		}
		col, err := s.attName(o.rel, o.num)
		if err != nil {
			return err
		}
		if !seenBase[o.rel] {
			seenBase[o.rel] = true
			bases = append(bases, T)
		}
		s.problem(fmt.Sprintf("column %s.%s is encrypted but %s.%s, which it shows, is not configured: statements addressed to %s directly are not encrypted, and reads through it return tokens", name, vc.Column, T, col, T),
			fmt.Sprintf("configure %s.%s too: %s (with a blind-index column of %s for blind_index), or remove %s from the columns of %s", T, col, snippet(col, vc, "", domainOf(v.cfg, vc)), T, vc.Column, name))
	}
	if len(bases) == 0 {
		var err error
		if bases, err = s.viewBases(oid); err != nil {
			return err
		}
	}
	base := "its base table"
	if len(bases) > 0 {
		base = strings.Join(bases, ", ")
	}
	s.note(fmt.Sprintf("%s is a %s: pgveil backfill, reencrypt, rehash, decrypt and verify skip it and work on %s", name, what, base))
	return nil
}

// viewBases names the tables a view reads.
func (s *shapeCheck) viewBases(oid uint32) ([]string, error) {
	return viewBases(s.ctx, s.pool, oid)
}

func viewBases(ctx context.Context, q querier, oid uint32) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT n.nspname || '.' || c.relname
		FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
		JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE r.ev_class = $1 AND r.rulename = '_RETURN' AND d.refobjid <> $1 ORDER BY 1`, oid)
	if err != nil {
		return nil, fmt.Errorf("pgveil: looking up the tables of view %d: %w", oid, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// serverCode notes triggers, rules and functions that read or write a
// configured relation: pgveil sees only what clients send, so it cannot
// encrypt what server-side code writes. It may be legitimate (code that
// never touches encrypted columns), so these are notes, not problems.
func (s *shapeCheck) serverCode() error {
	all := s.oids(true)
	var alts []string
	mention := map[string][]*relation{} // lower-case name → relations
	for _, r := range s.rels {
		n := strings.ToLower(r.st.name)
		if _, ok := mention[n]; !ok {
			alts = append(alts, regexp.QuoteMeta(n))
		}
		mention[n] = append(mention[n], r)
	}
	pattern := `\m(` + strings.Join(alts, "|") + `)\M`
	goPattern := regexp.MustCompile(`(?i)\b(` + strings.Join(alts, "|") + `)\b`)

	// Functions whose source names a configured relation, or whose
	// SQL-standard body depends on one.
	type fn struct {
		oid      uint32
		name     string
		mentions []string
	}
	rows, err := s.pool.Query(s.ctx, `SELECT p.oid, n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', coalesce(p.prosrc, ''),
			ARRAY(SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
				AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY($2::oid[]))::oid[]
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND l.lanname NOT IN ('c', 'internal')
			AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
			AND (p.prosrc ~* $1 OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
				AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY($2::oid[])))
		ORDER BY 2`, pattern, all)
	if err != nil {
		return fmt.Errorf("pgveil: looking up functions that use configured tables: %w", err)
	}
	var fns []*fn
	byOID := map[uint32]*fn{}
	for rows.Next() {
		var f fn
		var src string
		var deps []uint32
		if err := rows.Scan(&f.oid, &f.name, &src, &deps); err != nil {
			rows.Close()
			return err
		}
		seen := map[string]bool{}
		add := func(r *relation) {
			if !seen[r.full()] {
				seen[r.full()] = true
				f.mentions = append(f.mentions, r.full())
			}
		}
		for _, d := range deps {
			add(s.byOID[d])
		}
		for _, m := range goPattern.FindAllString(src, -1) {
			for _, r := range mention[strings.ToLower(m)] {
				add(r)
			}
		}
		if len(f.mentions) == 0 {
			continue
		}
		fns = append(fns, &f)
		byOID[f.oid] = &f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgveil: looking up functions that use configured tables: %w", err)
	}
	fnOIDs := make([]uint32, 0, len(fns))
	for _, f := range fns {
		fnOIDs = append(fnOIDs, f.oid)
	}
	const cannot = "pgveil cannot encrypt values written by server-side code: what it writes into encrypted columns is stored as plaintext, and what it reads or compares there are tokens"

	// Triggers running those functions, and every trigger on a configured
	// table (it sees tokens in NEW and OLD).
	rows, err = s.pool.Query(s.ctx, `SELECT t.tgname, n.nspname || '.' || c.relname, t.tgrelid, t.tgfoid,
			pn.nspname || '.' || p.proname || '()'
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
		WHERE NOT t.tgisinternal AND (t.tgfoid = ANY($1::oid[]) OR t.tgrelid = ANY($2::oid[]))
		ORDER BY 2, 1`, fnOIDs, all)
	if err != nil {
		return fmt.Errorf("pgveil: looking up triggers: %w", err)
	}
	viaTrigger := map[uint32]bool{}
	for rows.Next() {
		var tg, table, fname string
		var rel, foid uint32
		if err := rows.Scan(&tg, &table, &rel, &foid, &fname); err != nil {
			rows.Close()
			return err
		}
		var parts []string
		if f, ok := byOID[foid]; ok {
			viaTrigger[foid] = true
			parts = append(parts, fmt.Sprintf("trigger %s on %s runs function %s, which uses configured table %s: %s", tg, table, f.name, strings.Join(f.mentions, ", "), cannot))
		}
		if r, ok := s.byOID[rel]; ok {
			p := fmt.Sprintf("trigger %s on configured %s %s runs function %s: it sees the encrypted columns of NEW and OLD as tokens (changing them, e.g. lower(NEW.col), corrupts the token)", tg, r.what(), table, fname)
			if len(parts) > 0 {
				p = "it is on configured " + r.what() + " " + table + " too, and sees the encrypted columns of NEW and OLD as tokens (changing them corrupts the token)"
			}
			parts = append(parts, p)
		}
		s.note(strings.Join(parts, "; "))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgveil: looking up triggers: %w", err)
	}
	for _, f := range fns {
		if !viaTrigger[f.oid] {
			s.note(fmt.Sprintf("function %s uses configured table %s: %s", f.name, strings.Join(f.mentions, ", "), cannot))
		}
	}

	// Rules whose actions act on a configured relation.
	rows, err = s.pool.Query(s.ctx, `SELECT r.rulename, n.nspname || '.' || c.relname,
			array_agg(DISTINCT d.refobjid ORDER BY d.refobjid)::oid[]
		FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
		WHERE r.rulename <> '_RETURN' AND d.refobjid = ANY($1::oid[]) AND d.refobjid <> r.ev_class
		GROUP BY 1, 2 ORDER BY 2, 1`, all)
	if err != nil {
		return fmt.Errorf("pgveil: looking up rules: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rule, table string
		var refs []uint32
		if err := rows.Scan(&rule, &table, &refs); err != nil {
			return err
		}
		var names []string
		for _, o := range refs {
			names = append(names, s.byOID[o].full())
		}
		s.note(fmt.Sprintf("rule %s on %s acts on configured table %s: statements addressed to %s are not encrypted and %s", rule, table, strings.Join(names, ", "), table, cannot))
	}
	return rows.Err()
}
