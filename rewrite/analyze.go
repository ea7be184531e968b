package rewrite

import (
	"errors"
	"sort"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
	pgparser "github.com/pganalyze/pg_query_go/v5/parser"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// refusalPanic carries a refusal out of the recursive analysis.
type refusalPanic struct{ e *RefusalError }

type pieceKind uint8

const (
	pText pieceKind = iota
	pLit
	pParam
)

// piece is part of the replacement text of an edit.
type piece struct {
	kind pieceKind
	text string
	idx  int // literal index or 0-based client parameter
	act  Action
}

func txt(s string) piece { return piece{kind: pText, text: s} }

// edit replaces t[start:end] by pieces.
type edit struct {
	start, end int
	pieces     []piece
	seq        int
}

type vkind uint8

const (
	vNone vkind = iota
	vParam
	vLit
	vNull
	vDefault
)

// valRef is a value the rewriter can transform: a client parameter, a
// literal, NULL or DEFAULT, possibly cast to a text type.
type valRef struct {
	kind                 vkind
	idx                  int
	innerStart, innerEnd int
	outerStart, outerEnd int
}

type outCol struct {
	name string
	enc  *colRule // the output is this encrypted column
	hash *colRule // the output is this column's blind index
	null bool     // a NULL constant
	lost bool     // RowDescription will name no origin for it
}

type rte struct {
	name, schema string
	table        *tableRule
	derived      bool
	outs         []outCol
	unknown      bool // derived with output positions unknown (a * over a table)
}

type cteInfo struct {
	outs    []outCol
	unknown bool
}

type scope struct {
	parent *scope
	rtes   []*rte
	ctes   map[string]*cteInfo
}

func (s *scope) cte(name string) *cteInfo {
	for ; s != nil; s = s.parent {
		if c, ok := s.ctes[name]; ok {
			return c
		}
	}
	return nil
}

// use says in what an encrypted column appears, for refusals.
type use struct {
	op, reason string
}

type analyzer struct {
	r          *Rules
	sql, t     string
	normalized bool
	lits       []Literal
	maxClient  int
	litAt      map[int]int
	edits      []edit
	tables     map[string]bool
	ddl        bool
	results    []ResultColumn
	copy       *CopyPlan
	inPrepare  bool
	work       bool // something beyond default literal slots
	// sp resolves table names written without a schema (nil: public);
	// unqualified and searchPath become Plan.Unqualified and
	// Plan.SearchPathChange.
	sp           *SearchPath
	unqualified  bool
	searchPath   bool
	unqAfterDDL  bool
	unqAfterPath bool
}

// table finds the configured table a name in the statement refers to: with
// its schema, or else through the session's search path.
func (a *analyzer) table(schema, name string) *tableRule {
	if schema == "" {
		if a.r.hasName(name) {
			a.unqualified = true
		}
		schema = a.sp.Schema(name)
	}
	return a.r.table(schema, name)
}

// analyze parses and plans sql (normalized to key). exact reports that the
// plan was made from the original text.
func (r *Rules) analyze(sql, key string, lits []Literal, sp *SearchPath) (plan *Plan, exact bool, err error) {
	_, maxParam := scanConstants(sql, nil)
	a := &analyzer{r: r, sql: sql, t: key, normalized: true, lits: lits, maxClient: maxParam, tables: map[string]bool{}, sp: sp}
	tree, perr := pg.Parse(key)
	if perr != nil && key != sql {
		if t2, err2 := pg.Parse(sql); err2 == nil {
			tree, perr = t2, nil
			a.t, a.normalized, exact = sql, false, true
		}
	}
	if perr != nil && !r.mentionsTable(sql) {
		// Let through by the skip scan for a word of searchPathWords only:
		// PostgreSQL judges its syntax, as for any other table's.
		return &Plan{Kind: KindPassthrough}, exact, nil
	}
	if perr != nil {
		return r.refusePlan(&RefusalError{
			Table:   r.firstMentioned(sql),
			Op:      "statement",
			Message: "pgveil: could not parse statement touching encrypted table " + r.firstMentioned(sql),
			Hint:    parseHint(perr),
			Reason:  ReasonParseError,
			Code:    CodeSyntaxError,
		}, nil), exact, nil
	}
	if !a.normalized {
		a.litAt = make(map[int]int, len(lits))
		for i, l := range lits {
			a.litAt[l.Start] = i
		}
	}
	defer func() {
		if p := recover(); p != nil {
			if rp, ok := p.(refusalPanic); ok {
				plan, err = r.refusePlan(rp.e, a), nil
				return
			}
			if be, ok := p.(*bugError); ok {
				plan, err = nil, be
				return
			}
			plan, err = nil, bugf("panic while analyzing a statement: %v", p)
		}
	}()
	for _, raw := range tree.Stmts {
		// A statement that names a configured table without its schema
		// after one that may change what such a name finds (in the same
		// text, planned before either runs).
		ddl, path, unq := a.ddl, a.searchPath, a.unqualified
		a.unqualified = false
		outs, unknown, rows := a.stmt(raw.Stmt, nil)
		if a.unqualified {
			a.unqAfterDDL = a.unqAfterDDL || ddl
			a.unqAfterPath = a.unqAfterPath || path
		}
		a.unqualified = a.unqualified || unq
		if rows {
			a.results = nil
			for i, o := range outs {
				if o.enc != nil && o.lost {
					if unknown {
						a.refuseCol(o.enc, "a derived output column next to *", ReasonUnsupported,
							"name the output columns instead of using *")
					}
					a.results = append(a.results, ResultColumn{Index: i, Column: o.enc.label})
				}
			}
		}
	}
	return a.finish(), exact, nil
}

func parseHint(err error) string {
	var pe *pgparser.Error
	if errors.As(err, &pe) && pe.Cursorpos > 0 {
		return "syntax error at or near position " + strconv.Itoa(pe.Cursorpos)
	}
	return "check the statement's syntax"
}

// firstMentioned names the first configured table whose name the text holds.
func (r *Rules) firstMentioned(sql string) string {
	ls := strings.ToLower(sql)
	best, bestAt := "", len(ls)+1
	for _, t := range r.tables {
		if i := strings.Index(ls, strings.ToLower(t.name)); i >= 0 && i < bestAt {
			best, bestAt = t.qname, i
		}
	}
	if best == "" && len(r.tables) > 0 {
		best = r.tables[0].qname
	}
	return best
}

func (r *Rules) refusePlan(e *RefusalError, a *analyzer) *Plan {
	p := &Plan{Kind: KindRefuse, Refusal: e}
	if a != nil {
		p.Tables = sortedKeys(a.tables)
		p.DDL = a.ddl
		p.Unqualified, p.SearchPathChange = a.unqualified, a.searchPath
		p.UnqualifiedAfterDDL, p.UnqualifiedAfterPathChange = a.unqAfterDDL, a.unqAfterPath
	}
	if e.Table != "" && !contains(p.Tables, e.Table) {
		p.Tables = append(p.Tables, e.Table)
		sort.Strings(p.Tables)
	}
	if r.passthroughUnsupported() {
		p.Kind, p.Refusal = KindPassthrough, nil
	}
	return p
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- refusals

func (a *analyzer) refuse(e *RefusalError) { panic(refusalPanic{e}) }

func colHint(c *colRule) string {
	if c.searchable() {
		return "only =, <>, IN, = ANY and IS [NOT] NULL can use its blind index " + c.table.name + "." + c.blind
	}
	return c.label + " has no blind index: it can only be read, written and tested with IS [NOT] NULL; configure blind_index to compare it by equality"
}

func (a *analyzer) refuseCol(c *colRule, op, reason, hint string) {
	if hint == "" {
		hint = colHint(c)
	}
	a.refuse(&RefusalError{Table: c.table.qname, Column: c.name, Op: op, Hint: hint, Reason: reason})
}

func (a *analyzer) refuseTable(t *tableRule, op, reason, hint string) {
	a.refuse(&RefusalError{Table: t.qname, Op: op, Hint: hint, Reason: reason})
}

// ---- text helpers

func (a *analyzer) lexAt(pos int) *lexer { return &lexer{s: a.t, pos: pos} }

func (a *analyzer) nextSig(pos int) token {
	l := a.lexAt(pos)
	for {
		tk := l.next()
		if tk.kind != tkSpace && tk.kind != tkComment {
			return tk
		}
	}
}

// scanClose returns the offset of the first unmatched ')' at or after pos, or -1.
func (a *analyzer) scanClose(pos int) int {
	if tk, ok := a.scanDepth0(pos, ""); ok && a.t[tk.start] == ')' {
		return tk.start
	}
	return -1
}

// wordAtDepth0 returns the end of the first keyword w after pos outside
// parentheses, or -1.
func (a *analyzer) wordAtDepth0(pos int, w string) int {
	if tk, ok := a.scanDepth0(pos, w); ok && tk.kind == tkIdent {
		return tk.end
	}
	return -1
}

// scanDepth0 lexes from pos, keeping count of parentheses and brackets, to
// the first ')' that closes the group pos is in or, when word is set, the
// first such word outside parentheses. It reports false at the end of the
// text, at a ';' outside parentheses, or at a ']' closing the group.
func (a *analyzer) scanDepth0(pos int, word string) (token, bool) {
	if pos < 0 || pos > len(a.t) {
		return token{}, false
	}
	l := a.lexAt(pos)
	depth := 0
	for {
		tk := l.next()
		switch tk.kind {
		case tkEOF:
			return tk, false
		case tkIdent:
			if depth == 0 && word != "" && strings.EqualFold(a.tokText(tk), word) {
				return tk, true
			}
		case tkPunct:
			switch a.t[tk.start] {
			case '(', '[':
				depth++
			case ')', ']':
				if depth == 0 {
					return tk, a.t[tk.start] == ')'
				}
				depth--
			case ';':
				if depth == 0 {
					return tk, false
				}
			}
		}
	}
}

func (a *analyzer) tokText(tk token) string { return a.t[tk.start:tk.end] }

// widenParens extends v's outer span over balanced parentheses written
// around it, as drivers do (pgjdbc's simple mode sends email = ('x')); from
// is where the text before the value starts (after the column).
func (a *analyzer) widenParens(from int, v valRef) valRef {
	if from < 0 || from > v.outerStart {
		return v
	}
	var opens []int
	l := a.lexAt(from)
	for {
		tk := l.next()
		if tk.kind == tkEOF || tk.start >= v.outerStart {
			break
		}
		if tk.kind == tkSpace || tk.kind == tkComment {
			continue
		}
		if a.tokText(tk) == "(" {
			opens = append(opens, tk.start)
		} else {
			opens = opens[:0]
		}
	}
	n, end := 0, v.outerEnd
	for n < len(opens) {
		tk := a.nextSig(end)
		if tk.kind == tkEOF || a.tokText(tk) != ")" {
			break
		}
		end = tk.end
		n++
	}
	if n == 0 {
		return v
	}
	v.outerStart, v.outerEnd = opens[len(opens)-n], end
	return v
}

// onlyTokens reports whether t[from:to] holds only the given tokens
// (compared case-insensitively), spaces and comments.
func (a *analyzer) onlyTokens(from, to int, allowed ...string) bool {
	if from > to || from < 0 || to > len(a.t) {
		return false
	}
	l := a.lexAt(from)
	for {
		tk := l.next()
		if tk.kind == tkEOF || tk.start >= to {
			return true
		}
		if tk.end > to {
			return false
		}
		if tk.kind == tkSpace || tk.kind == tkComment {
			continue
		}
		ok := false
		for _, w := range allowed {
			if strings.EqualFold(a.tokText(tk), w) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
}

func identValue(s string) string {
	if strings.HasPrefix(s, `"`) && len(s) >= 2 {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return strings.ToLower(s)
}

func identText(name string, quoted bool) string {
	simple := name != ""
	for i := 0; i < len(name) && simple; i++ {
		c := name[i]
		simple = c >= 'a' && c <= 'z' || c == '_' || i > 0 && (c >= '0' && c <= '9' || c == '$')
	}
	if simple && !quoted {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

type refSpan struct {
	start, end         int
	lastStart, lastEnd int
	quotedLast         bool
}

// colSpan finds the text of a column reference.
func (a *analyzer) colSpan(cr *pg.ColumnRef) (refSpan, bool) {
	pos := int(cr.Location)
	if pos < 0 || pos >= len(a.t) {
		return refSpan{}, false
	}
	l := a.lexAt(pos)
	var sp refSpan
	n := 0
	for {
		tk := l.next()
		if tk.kind != tkIdent && tk.kind != tkQIdent && !(tk.kind == tkOp && a.t[tk.start] == '*') {
			return refSpan{}, false
		}
		if n == 0 {
			sp.start = tk.start
		}
		n++
		sp.lastStart, sp.lastEnd, sp.end = tk.start, tk.end, tk.end
		sp.quotedLast = tk.kind == tkQIdent
		save := l.pos
		nt := a.nextSig(save)
		if nt.kind != tkPunct || a.t[nt.start] != '.' {
			break
		}
		l.pos = nt.end
		for {
			st := l.pos
			t2 := l.next()
			if t2.kind != tkSpace && t2.kind != tkComment {
				l.pos = st
				break
			}
		}
	}
	if n != len(cr.Fields) {
		return refSpan{}, false
	}
	return sp, true
}

func (a *analyzer) mustColSpan(cr *pg.ColumnRef, c *colRule) refSpan {
	sp, ok := a.colSpan(cr)
	if !ok {
		a.refuseCol(c, "this form of column reference", ReasonUnsupported, "write the column as name or table.name")
	}
	return sp
}

func (a *analyzer) addEdit(start, end int, pieces ...piece) {
	if start < 0 || end < start || end > len(a.t) {
		panic(bugf("edit out of range"))
	}
	a.edits = append(a.edits, edit{start: start, end: end, pieces: pieces, seq: len(a.edits)})
	a.work = true
}

// ---- values

func (a *analyzer) value(n *pg.Node, allowArray bool) (valRef, bool) {
	if n == nil {
		return valRef{}, false
	}
	switch x := n.Node.(type) {
	case *pg.Node_ParamRef:
		loc := int(x.ParamRef.Location)
		num := int(x.ParamRef.Number)
		if loc < 0 || loc >= len(a.t) || a.t[loc] != '$' {
			return valRef{}, false
		}
		end := loc + 1
		for end < len(a.t) && isDigit(a.t[end]) {
			end++
		}
		v := valRef{kind: vParam, idx: num - 1, innerStart: loc, innerEnd: end, outerStart: loc, outerEnd: end}
		if a.normalized && num > a.maxClient {
			i := num - a.maxClient - 1
			if i < 0 || i >= len(a.lits) {
				return valRef{}, false
			}
			if a.isBitLiteral(i) {
				return valRef{}, false
			}
			v.kind, v.idx = vLit, i
		} else if num < 1 {
			return valRef{}, false
		}
		return v, true
	case *pg.Node_AConst:
		loc := int(x.AConst.Location)
		if x.AConst.Isnull {
			if loc < 0 || loc+4 > len(a.t) || !strings.EqualFold(a.t[loc:loc+4], "null") {
				return valRef{}, false
			}
			return valRef{kind: vNull, innerStart: loc, innerEnd: loc + 4, outerStart: loc, outerEnd: loc + 4}, true
		}
		if !a.normalized {
			if i, ok := a.litAt[loc]; ok && !a.isBitLiteral(i) {
				l := a.lits[i]
				return valRef{kind: vLit, idx: i, innerStart: l.Start, innerEnd: l.End, outerStart: l.Start, outerEnd: l.End}, true
			}
		}
		return valRef{}, false
	case *pg.Node_SetToDefault:
		loc := int(x.SetToDefault.Location)
		if loc < 0 || loc+7 > len(a.t) || !strings.EqualFold(a.t[loc:loc+7], "default") {
			return valRef{}, false
		}
		return valRef{kind: vDefault, innerStart: loc, innerEnd: loc + 7, outerStart: loc, outerEnd: loc + 7}, true
	case *pg.Node_TypeCast:
		tc := x.TypeCast
		inner, ok := a.value(tc.Arg, allowArray)
		if !ok || inner.kind == vDefault || tc.TypeName == nil {
			return valRef{}, false
		}
		tn := tc.TypeName
		if len(tn.Names) == 0 || len(tn.Typmods) > 0 || tn.Setof || tn.PctType {
			return valRef{}, false
		}
		name := tn.Names[len(tn.Names)-1].GetString_().GetSval()
		if name != "text" && name != "varchar" {
			return valRef{}, false
		}
		if len(tn.ArrayBounds) > 1 || len(tn.ArrayBounds) == 1 && !allowArray {
			return valRef{}, false
		}
		loc := int(tc.Location)
		if loc < 0 || loc >= len(a.t) {
			return valRef{}, false
		}
		switch {
		case strings.HasPrefix(a.t[loc:], "::"):
			// scan the type name: ident [. ident] [ '[' ']' ]
			l := a.lexAt(int(tn.Location))
			tk := l.next()
			if tk.kind != tkIdent && tk.kind != tkQIdent {
				return valRef{}, false
			}
			end := tk.end
			last := a.tokText(tk)
			if nt := a.nextSig(end); nt.kind == tkPunct && a.t[nt.start] == '.' {
				t2 := a.nextSig(nt.end)
				if t2.kind != tkIdent && t2.kind != tkQIdent {
					return valRef{}, false
				}
				end, last = t2.end, a.tokText(t2)
			}
			if identValue(last) != name {
				return valRef{}, false
			}
			if len(tn.ArrayBounds) == 1 {
				o := a.nextSig(end)
				c := a.nextSig(o.end)
				if a.tokText(o) != "[" || a.tokText(c) != "]" {
					return valRef{}, false
				}
				end = c.end
			}
			inner.outerEnd = end
		case len(a.t) >= loc+4 && strings.EqualFold(a.t[loc:loc+4], "cast"):
			c := a.scanClose(inner.outerEnd)
			if c < 0 {
				return valRef{}, false
			}
			inner.outerStart, inner.outerEnd = loc, c+1
		default:
			return valRef{}, false
		}
		return inner, true
	}
	return valRef{}, false
}

func (a *analyzer) isBitLiteral(i int) bool {
	c := a.sql[a.lits[i].Start]
	return c == 'b' || c == 'B' || c == 'x' || c == 'X'
}

func (a *analyzer) action(op Op, c *colRule) Action {
	act := Action{Op: op, Column: c.label}
	if op == OpHash || op == OpHashAll || op == OpHashArray {
		act.Domain = c.domain
	}
	return act
}

// core returns the piece standing for v's inner value under act.
func (a *analyzer) core(v valRef, act Action) piece {
	switch v.kind {
	case vParam:
		if a.inPrepare && act.Op != OpNone {
			a.refuse(&RefusalError{Table: a.r.firstMentioned(a.sql), Op: "PREPARE with a parameter aimed at an encrypted column",
				Hint: "use the extended query protocol (server-side prepared statements of the driver) instead of SQL PREPARE", Reason: ReasonUnsupported})
		}
		return piece{kind: pParam, idx: v.idx, act: act}
	case vLit:
		return piece{kind: pLit, idx: v.idx, act: act}
	case vNull:
		return txt("NULL")
	case vDefault:
		return txt("DEFAULT")
	}
	panic(bugf("core of a non-value"))
}

func (a *analyzer) valPieces(v valRef, act Action, keepCast bool) []piece {
	c := a.core(v, act)
	if !keepCast || v.outerStart == v.innerStart && v.outerEnd == v.innerEnd {
		return []piece{c}
	}
	return []piece{txt(a.t[v.outerStart:v.innerStart]), c, txt(a.t[v.innerEnd:v.outerEnd])}
}

// ---- statements

// stmt analyzes one statement; it returns the statement's output columns
// (when it returns rows) and whether their positions are unknown.
func (a *analyzer) stmt(n *pg.Node, parent *scope) (outs []outCol, unknown bool, rows bool) {
	if n == nil {
		return nil, false, false
	}
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		if x.SelectStmt.IntoClause != nil {
			a.ddl = true
		}
		outs, unknown = a.selectStmt(x.SelectStmt, parent)
		return outs, unknown, x.SelectStmt.IntoClause == nil
	case *pg.Node_InsertStmt:
		outs, unknown = a.insert(x.InsertStmt, parent)
		return outs, unknown, len(x.InsertStmt.ReturningList) > 0
	case *pg.Node_UpdateStmt:
		outs, unknown = a.update(x.UpdateStmt, parent)
		return outs, unknown, len(x.UpdateStmt.ReturningList) > 0
	case *pg.Node_DeleteStmt:
		outs, unknown = a.delete(x.DeleteStmt, parent)
		return outs, unknown, len(x.DeleteStmt.ReturningList) > 0
	case *pg.Node_CopyStmt:
		a.copyStmt(x.CopyStmt, parent)
		return nil, false, false
	case *pg.Node_ExplainStmt:
		a.stmt(x.ExplainStmt.Query, parent)
		return nil, false, true
	case *pg.Node_PrepareStmt:
		was := a.inPrepare
		a.inPrepare = true
		a.stmt(x.PrepareStmt.Query, parent)
		a.inPrepare = was
		return nil, false, false
	case *pg.Node_DeclareCursorStmt:
		a.stmt(x.DeclareCursorStmt.Query, parent)
		return nil, false, false
	case *pg.Node_CreateTableAsStmt:
		a.ddl = true
		a.stmt(x.CreateTableAsStmt.Query, parent)
		return nil, false, false
	case *pg.Node_ViewStmt:
		a.ddl = true
		a.collectTables(x.ViewStmt.View.ProtoReflect())
		a.stmt(x.ViewStmt.Query, parent)
		return nil, false, false
	case *pg.Node_DoStmt:
		for _, arg := range x.DoStmt.Args {
			if de := arg.GetDefElem(); de != nil && de.Defname == "as" {
				if body := de.Arg.GetString_().GetSval(); a.r.mentionsTable(body) {
					t := a.r.byQName[a.r.firstMentioned(body)]
					a.refuseTable(t, "a DO block", ReasonUnsupported, "run the statements of the block directly so pgveil can encrypt their values")
				}
			}
		}
		return nil, false, false
	case *pg.Node_AlterTableStmt:
		if t := a.table(x.AlterTableStmt.Relation.GetSchemaname(), x.AlterTableStmt.Relation.GetRelname()); t != nil {
			for _, c := range x.AlterTableStmt.Cmds {
				cmd := c.GetAlterTableCmd()
				if cmd == nil {
					continue
				}
				switch cmd.Subtype {
				case pg.AlterTableType_AT_ColumnDefault:
					if cr := t.cols[cmd.Name]; cr != nil && cmd.Def != nil && !isNullConst(cmd.Def) {
						a.refuseColumnDefault(cr)
					}
				case pg.AlterTableType_AT_AddColumn:
					a.columnDef(t, cmd.Def.GetColumnDef())
				case pg.AlterTableType_AT_AddConstraint:
					a.encryptedRefs(t, cmd.Def, "a constraint")
				case pg.AlterTableType_AT_AlterColumnType:
					// USING computes the new values in PostgreSQL: only the
					// column itself can pass (its tokens stay tokens).
					if cr := t.cols[cmd.Name]; cr != nil {
						if u := cmd.Def.GetColumnDef().GetRawDefault(); u != nil {
							if ref := u.GetColumnRef(); ref == nil || fieldNames(ref)[len(fieldNames(ref))-1] != cr.name {
								a.refuseCol(cr, "ALTER COLUMN ... TYPE ... USING an expression", ReasonUnsupported,
									"change the type without USING, or with USING "+cr.name+"::text")
							}
						}
					}
				}
			}
		}
	case *pg.Node_CreateStmt:
		if t := a.table(x.CreateStmt.Relation.GetSchemaname(), x.CreateStmt.Relation.GetRelname()); t != nil {
			for _, e := range x.CreateStmt.TableElts {
				a.columnDef(t, e.GetColumnDef())
				if con := e.GetConstraint(); con != nil {
					a.encryptedRefs(t, e, "a constraint")
				}
			}
		}
	case *pg.Node_IndexStmt:
		// A partial index's predicate or an index expression compares in
		// PostgreSQL, with its constants stored in the catalog.
		if t := a.table(x.IndexStmt.Relation.GetSchemaname(), x.IndexStmt.Relation.GetRelname()); t != nil {
			if x.IndexStmt.WhereClause != nil {
				a.encryptedRefs(t, x.IndexStmt.WhereClause, "an index predicate")
			}
		}
	case *pg.Node_CreatePolicyStmt:
		if t := a.table(x.CreatePolicyStmt.Table.GetSchemaname(), x.CreatePolicyStmt.Table.GetRelname()); t != nil {
			a.encryptedRefs(t, x.CreatePolicyStmt.Qual, "a row security policy")
			a.encryptedRefs(t, x.CreatePolicyStmt.WithCheck, "a row security policy")
		}
	case *pg.Node_AlterPolicyStmt:
		if t := a.table(x.AlterPolicyStmt.Table.GetSchemaname(), x.AlterPolicyStmt.Table.GetRelname()); t != nil {
			a.encryptedRefs(t, x.AlterPolicyStmt.Qual, "a row security policy")
			a.encryptedRefs(t, x.AlterPolicyStmt.WithCheck, "a row security policy")
		}
	case *pg.Node_CreateFunctionStmt:
		// Like a DO block: pgveil never sees the statements of the body
		// when they run, so neither their values nor their lookups.
		f := x.CreateFunctionStmt
		body := f.SqlBody != nil && a.touchesConfigured(f.SqlBody.ProtoReflect())
		for _, o := range f.Options {
			if de := o.GetDefElem(); de != nil && de.Defname == "as" {
				for _, it := range de.Arg.GetList().GetItems() {
					body = body || a.r.mentionsTable(it.GetString_().GetSval())
				}
				body = body || a.r.mentionsTable(de.Arg.GetString_().GetSval())
			}
		}
		if body {
			what := "a function"
			if f.IsProcedure {
				what = "a procedure"
			}
			t := a.r.byQName[a.r.firstMentioned(a.sql)]
			a.refuseTable(t, what+" whose body uses it", ReasonUnsupported,
				"pgveil cannot encrypt or look up what server-side code writes and reads; run its statements from the application, or create it directly on PostgreSQL knowing its values are stored as given")
		}
	case *pg.Node_RuleStmt:
		r := x.RuleStmt
		if a.table(r.Relation.GetSchemaname(), r.Relation.GetRelname()) != nil || a.touchesConfigured(r.ProtoReflect()) {
			t := a.r.byQName[a.r.firstMentioned(a.sql)]
			a.refuseTable(t, "a rule", ReasonUnsupported, "a rule's actions run inside PostgreSQL, where pgveil cannot encrypt them; use the application's SQL")
		}
	case *pg.Node_VariableSetStmt:
		// SET [LOCAL] search_path / role / session_authorization ("$user"
		// in the path follows them), RESET of those, RESET ALL.
		switch x.VariableSetStmt.Name {
		case "search_path", "role", "session_authorization":
			a.searchPath = true
		}
		if x.VariableSetStmt.Kind == pg.VariableSetKind_VAR_RESET_ALL {
			a.searchPath = true
		}
	case *pg.Node_DiscardStmt:
		// DISCARD ALL resets the path; DISCARD TEMP drops temporary tables
		// that may have hidden a configured one.
		if t := x.DiscardStmt.Target; t == pg.DiscardMode_DISCARD_ALL || t == pg.DiscardMode_DISCARD_TEMP {
			a.searchPath = true
		}
	case *pg.Node_MergeStmt:
		before := len(a.tables)
		a.collectTables(x.MergeStmt.ProtoReflect())
		if len(a.tables) > before || a.touchesConfigured(x.MergeStmt.ProtoReflect()) {
			t := a.r.byQName[sortedKeys(a.tables)[0]]
			a.refuseTable(t, "MERGE", ReasonUnsupported, "use INSERT ... ON CONFLICT, UPDATE and DELETE")
		}
		return nil, false, false
	}
	if isDDL(n) {
		a.ddl = true
	}
	a.collectTables(n.ProtoReflect())
	return nil, false, false
}

// columnDef refuses a default or generated value for an encrypted column:
// PostgreSQL would store it as it is written, in plaintext, in every row
// inserted without the column.
func (a *analyzer) columnDef(t *tableRule, cd *pg.ColumnDef) {
	if cd == nil {
		return
	}
	cr := t.cols[cd.Colname]
	if cr == nil {
		return
	}
	if cd.RawDefault != nil && !isNullConst(cd.RawDefault) {
		a.refuseColumnDefault(cr)
	}
	for _, c := range cd.Constraints {
		if con := c.GetConstraint(); con != nil {
			switch con.Contype {
			case pg.ConstrType_CONSTR_DEFAULT, pg.ConstrType_CONSTR_GENERATED:
				if con.RawExpr != nil && !isNullConst(con.RawExpr) {
					a.refuseColumnDefault(cr)
				}
			}
		}
	}
}

// encryptedRefs refuses a reference to an encrypted column of t anywhere in
// n (a CHECK constraint, an index predicate, a policy): PostgreSQL would
// compare ciphertext, and the constants beside it would be stored in its
// catalog unencrypted.
func (a *analyzer) encryptedRefs(t *tableRule, n *pg.Node, what string) {
	if n == nil {
		return
	}
	walkNodes(n.ProtoReflect(), func(m protoreflect.Message) bool {
		if cr, ok := m.Interface().(*pg.ColumnRef); ok {
			f := fieldNames(cr)
			if c := t.cols[f[len(f)-1]]; c != nil {
				a.refuseCol(c, what, ReasonUnsupported, "PostgreSQL would compare ciphertext and keep the constants unencrypted in its catalog")
			}
			return false
		}
		return true
	})
}

func (a *analyzer) refuseColumnDefault(cr *colRule) {
	a.refuseCol(cr, "a default or generated value", ReasonUnsupported,
		"PostgreSQL would store it unencrypted; insert the value through pgveil instead (DEFAULT NULL is allowed)")
}

func isNullConst(n *pg.Node) bool {
	c := n.GetAConst()
	return c != nil && c.Isnull
}

func isDDL(n *pg.Node) bool {
	m := n.ProtoReflect()
	od := m.Descriptor().Oneofs()
	if od.Len() == 0 {
		return false
	}
	fd := m.WhichOneof(od.Get(0))
	if fd == nil {
		return false
	}
	name := string(fd.Name())
	switch {
	case strings.HasPrefix(name, "create"), strings.HasPrefix(name, "alter"),
		strings.HasPrefix(name, "drop"), strings.HasPrefix(name, "rename"):
		return true
	}
	switch name {
	case "index_stmt", "view_stmt", "rule_stmt", "define_stmt", "composite_type_stmt", "comment_stmt", "grant_stmt", "reindex_stmt":
		return true
	}
	return false
}

// collectTables records configured tables named anywhere under m.
func (a *analyzer) collectTables(m protoreflect.Message) {
	if rv, ok := m.Interface().(*pg.RangeVar); ok {
		if t := a.table(rv.Schemaname, rv.Relname); t != nil {
			a.tables[t.qname] = true
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				a.collectTables(l.Get(i).Message())
			}
		} else if !fd.IsMap() {
			a.collectTables(v.Message())
		}
		return true
	})
}

func (a *analyzer) touchesConfigured(m protoreflect.Message) bool {
	found := false
	walkNodes(m, func(m protoreflect.Message) bool {
		if rv, ok := m.Interface().(*pg.RangeVar); ok {
			found = found || a.table(rv.Schemaname, rv.Relname) != nil
			return false
		}
		return !found
	})
	return found
}

// walkNodes calls visit for m and, while visit returns true, for every
// message below it, depth first.
func walkNodes(m protoreflect.Message, visit func(protoreflect.Message) bool) {
	if !visit(m) {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
			if fd.IsList() {
				for i := 0; i < v.List().Len(); i++ {
					walkNodes(v.List().Get(i).Message(), visit)
				}
			} else {
				walkNodes(v.Message(), visit)
			}
		}
		return true
	})
}

func (a *analyzer) with(w *pg.WithClause, sc *scope) {
	if w == nil {
		return
	}
	sc.ctes = map[string]*cteInfo{}
	for _, n := range w.Ctes {
		c := n.GetCommonTableExpr()
		if c == nil {
			continue
		}
		info := &cteInfo{}
		if w.Recursive {
			sc.ctes[c.Ctename] = info
		}
		outs, unknown, _ := a.stmt(c.Ctequery, sc)
		if len(c.Aliascolnames) > 0 {
			if unknown {
				for _, o := range outs {
					if o.enc != nil {
						a.refuseCol(o.enc, "column aliases of a CTE over *", ReasonUnsupported, "name the columns in the CTE's query")
					}
				}
			}
			outs = renameOuts(outs, c.Aliascolnames)
		}
		info.outs, info.unknown = outs, unknown
		sc.ctes[c.Ctename] = info
	}
}

func renameOuts(outs []outCol, names []*pg.Node) []outCol {
	res := make([]outCol, len(outs))
	copy(res, outs)
	for i, n := range names {
		if i < len(res) {
			res[i].name = n.GetString_().GetSval()
		}
	}
	return res
}

// ---- SELECT

func (a *analyzer) selectNode(n *pg.Node, parent *scope) ([]outCol, bool) {
	outs, unknown, _ := a.stmt(n, parent)
	return outs, unknown
}

func (a *analyzer) selectStmt(s *pg.SelectStmt, parent *scope) ([]outCol, bool) {
	if s == nil {
		return nil, false
	}
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	if s.Op != pg.SetOperation_SETOP_NONE && s.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		lo, lu := a.selectStmt(s.Larg, sc)
		ro, ru := a.selectStmt(s.Rarg, sc)
		outs := make([]outCol, len(lo))
		copy(outs, lo)
		enc := false
		for i := range outs {
			var r outCol
			if i < len(ro) {
				r = ro[i]
			}
			l := lo[i]
			if l.enc == nil && r.enc == nil {
				continue
			}
			c := l.enc
			if c == nil {
				c = r.enc
			}
			enc = true
			// both arms must carry the same encrypted column (or NULL)
			if !(l.enc == c || l.null) || !(r.enc == c || r.null || i >= len(ro)) {
				if l.enc != nil && r.enc != nil && l.enc.domain == r.enc.domain {
					// tokens of another column: decryptable, same meaning
				} else {
					a.refuseCol(c, "mixing an encrypted column with other values in a set operation", ReasonUnsupported,
						"select the encrypted column (or NULL) at that position in every arm")
				}
			}
			outs[i].enc, outs[i].lost, outs[i].null = c, true, false
		}
		if enc {
			if lu || ru {
				for _, o := range outs {
					if o.enc != nil {
						a.refuseCol(o.enc, "a set operation over *", ReasonUnsupported, "name the columns in every arm")
					}
				}
			}
			if !(s.Op == pg.SetOperation_SETOP_UNION && s.All) {
				for _, o := range outs {
					if o.enc != nil {
						op := map[pg.SetOperation]string{pg.SetOperation_SETOP_UNION: "UNION", pg.SetOperation_SETOP_INTERSECT: "INTERSECT", pg.SetOperation_SETOP_EXCEPT: "EXCEPT"}[s.Op]
						a.refuseCol(o.enc, op+" (which compares values)", ReasonDistinct, "use UNION ALL; ciphertexts of equal values differ, so they cannot be compared")
					}
				}
			}
		}
		for _, sb := range s.SortClause {
			if x := sb.GetSortBy(); x != nil {
				a.sortLike(x.Node, sc, outs, lu || ru, "ORDER BY", ReasonOrderBy)
			}
		}
		a.expr(s.LimitCount, sc, use{"LIMIT", ReasonUnsupported})
		a.expr(s.LimitOffset, sc, use{"OFFSET", ReasonUnsupported})
		return outs, lu || ru
	}
	if len(s.ValuesLists) > 0 {
		var outs []outCol
		for r, row := range s.ValuesLists {
			for _, item := range row.GetList().GetItems() {
				a.expr(item, sc, use{"VALUES", ReasonUnsupported})
				if r == 0 {
					o := outCol{}
					if c := item.GetAConst(); c != nil && c.Isnull {
						o.null = true
					}
					outs = append(outs, o)
				}
			}
		}
		return outs, false
	}
	for _, f := range s.FromClause {
		a.fromItem(f, sc)
	}
	outs, unknown := a.targets(s.TargetList, sc)
	a.expr(s.WhereClause, sc, use{"a boolean test", ReasonFunction})
	for _, g := range s.GroupClause {
		a.sortLike(g, sc, outs, unknown, "GROUP BY", ReasonGroupBy)
	}
	a.expr(s.HavingClause, sc, use{"HAVING", ReasonFunction})
	for _, w := range s.WindowClause {
		a.generic(w.ProtoReflect(), sc, use{"a window", ReasonFunction})
	}
	if len(s.DistinctClause) > 0 {
		if len(s.DistinctClause) == 1 && s.DistinctClause[0].GetNode() == nil {
			for _, o := range outs {
				if o.enc != nil {
					a.refuseCol(o.enc, "DISTINCT", ReasonDistinct, "ciphertexts of equal values differ; select the blind index or drop DISTINCT")
				}
			}
		} else {
			for _, d := range s.DistinctClause {
				a.sortLike(d, sc, outs, unknown, "DISTINCT ON", ReasonDistinct)
			}
		}
	}
	for _, sb := range s.SortClause {
		if x := sb.GetSortBy(); x != nil {
			a.sortLike(x.Node, sc, outs, unknown, "ORDER BY", ReasonOrderBy)
		}
	}
	a.expr(s.LimitCount, sc, use{"LIMIT", ReasonUnsupported})
	a.expr(s.LimitOffset, sc, use{"OFFSET", ReasonUnsupported})
	return outs, unknown
}

// intConst returns the integer value of a constant node (ORDER BY 1).
func (a *analyzer) intConst(n *pg.Node) (int, bool) {
	if c := n.GetAConst(); c != nil {
		if iv, ok := c.Val.(*pg.A_Const_Ival); ok {
			return int(iv.Ival.Ival), true
		}
		return 0, false
	}
	if p := n.GetParamRef(); p != nil && a.normalized && int(p.Number) > a.maxClient {
		i := int(p.Number) - a.maxClient - 1
		if i >= 0 && i < len(a.lits) {
			l := a.lits[i]
			if v, err := strconv.Atoi(a.sql[l.Start:l.End]); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// sortLike checks an ORDER BY / GROUP BY / DISTINCT ON item.
func (a *analyzer) sortLike(n *pg.Node, sc *scope, outs []outCol, unknown bool, op, reason string) {
	if n == nil {
		return
	}
	if pos, ok := a.intConst(n); ok {
		if !unknown && pos >= 1 && pos <= len(outs) && outs[pos-1].enc != nil {
			a.refuseCol(outs[pos-1].enc, op, reason, "")
		}
		if unknown {
			// a position among columns of * that pgveil cannot count
			for _, o := range outs {
				if o.enc != nil {
					a.refuseCol(o.enc, op+" by position next to *", reason, "name the column instead of its position")
				}
			}
		}
		return
	}
	if cr := n.GetColumnRef(); cr != nil {
		if f := fieldNames(cr); len(f) == 1 {
			for _, o := range outs {
				if o.name == f[0] {
					if o.enc != nil {
						a.refuseCol(o.enc, op, reason, "")
					}
					return
				}
			}
		}
		if res := a.resolveRef(sc, cr); res.enc != nil {
			a.refuseCol(res.enc, op, reason, "")
		}
		return
	}
	a.expr(n, sc, use{op, reason})
}

func fieldNames(cr *pg.ColumnRef) []string {
	out := make([]string, 0, len(cr.Fields))
	for _, f := range cr.Fields {
		if s := f.GetString_(); s != nil {
			out = append(out, s.Sval)
		} else {
			out = append(out, "*")
		}
	}
	return out
}

func (a *analyzer) targets(list []*pg.Node, sc *scope) ([]outCol, bool) {
	var outs []outCol
	unknown := false
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil {
			f := fieldNames(cr)
			if f[len(f)-1] == "*" {
				o, u := a.starOuts(sc, f)
				outs = append(outs, o...)
				unknown = unknown || u
				continue
			}
			res := a.resolve(sc, f)
			a.wholeRow(sc, cr)
			name := rt.Name
			if name == "" {
				name = f[len(f)-1]
			}
			outs = append(outs, outCol{name: name, enc: res.enc, hash: res.hash, lost: res.lost && res.enc != nil})
			continue
		}
		if sl := rt.Val.GetSubLink(); sl != nil && sl.SubLinkType == pg.SubLinkType_EXPR_SUBLINK {
			so, su := a.selectNode(sl.Subselect, sc)
			o := outCol{name: rt.Name}
			if len(so) > 0 && so[0].enc != nil {
				if su {
					a.refuseCol(so[0].enc, "a scalar subquery over *", ReasonUnsupported, "name the column in the subquery")
				}
				o.enc, o.lost = so[0].enc, true
			}
			outs = append(outs, o)
			continue
		}
		a.expr(rt.Val, sc, use{"an expression", ReasonFunction})
		o := outCol{name: rt.Name}
		if c := rt.Val.GetAConst(); c != nil && c.Isnull {
			o.null = true
		}
		outs = append(outs, o)
	}
	return outs, unknown
}

// starOuts expands * or t.* into the known output columns.
func (a *analyzer) starOuts(sc *scope, f []string) ([]outCol, bool) {
	var rtes []*rte
	if len(f) == 1 {
		rtes = sc.rtes
	} else if r := a.findRTE(sc, f[:len(f)-1]); r != nil {
		rtes = []*rte{r}
	}
	return a.outsOf(rtes)
}

// outsOf lists the output columns pgveil knows of the range entries, in
// order; unknown reports that others may come between them.
func (a *analyzer) outsOf(rtes []*rte) ([]outCol, bool) {
	var outs []outCol
	unknown := false
	for _, r := range rtes {
		switch {
		case r.derived:
			outs = append(outs, r.outs...)
			unknown = unknown || r.unknown
		case r.table != nil:
			for _, c := range r.table.order {
				outs = append(outs, outCol{name: c.name, enc: c})
				if c.blind != "" {
					outs = append(outs, outCol{name: c.blind, hash: c})
				}
			}
			unknown = true
		default:
			unknown = true
		}
	}
	return outs, unknown
}

func (a *analyzer) findRTE(sc *scope, qual []string) *rte {
	name := qual[len(qual)-1]
	schema := ""
	if len(qual) >= 2 {
		schema = qual[len(qual)-2]
	}
	for s := sc; s != nil; s = s.parent {
		for _, r := range s.rtes {
			if r.name == name && (schema == "" || r.schema == schema) {
				return r
			}
		}
	}
	return nil
}

type colRes struct {
	enc    *colRule
	hash   *colRule
	rte    *rte
	hashOK bool // the blind index is reachable through the same range entry
	// lost: the column of a derived table whose RowDescription names no
	// origin (a set operation's output, a scalar subquery's value), so a
	// reference to it must be decrypted by position too.
	lost bool
}

func lookupIn(r *rte, col string) (colRes, bool) {
	if r.derived {
		for _, o := range r.outs {
			if o.name == col {
				res := colRes{enc: o.enc, hash: o.hash, rte: r, lost: o.lost}
				if o.enc != nil && o.enc.blind != "" {
					for _, h := range r.outs {
						if h.hash == o.enc && h.name == o.enc.blind {
							res.hashOK = true
						}
					}
				}
				return res, true
			}
		}
		return colRes{}, false
	}
	if r.table != nil {
		if c := r.table.cols[col]; c != nil {
			return colRes{enc: c, rte: r, hashOK: c.searchable()}, true
		}
		if c := r.table.hashCols[col]; c != nil {
			return colRes{hash: c, rte: r}, true
		}
	}
	return colRes{}, false
}

// wholeRow refuses a reference to a whole row of an encrypted table used in
// an expression (row_to_json(u)): its encrypted fields would not be decrypted.
func (a *analyzer) wholeRow(sc *scope, cr *pg.ColumnRef) {
	f := fieldNames(cr)
	var rtes []*rte
	switch {
	case f[len(f)-1] == "*":
		// u.* inside an expression (to_jsonb(u.*), (u.*)::text, ROW(u.*)):
		// the same whole row. A * in the select list never gets here.
		if len(f) == 1 {
			rtes = sc.rtes
		} else if r := a.findRTE(sc, f[:len(f)-1]); r != nil {
			rtes = []*rte{r}
		}
	case len(f) == 1:
		if res := a.resolve(sc, f); res.rte != nil {
			return
		}
		if r := a.findRTE(sc, f); r != nil {
			rtes = []*rte{r}
		}
	}
	for _, r := range rtes {
		if r.table != nil {
			a.refuseTable(r.table, "a whole-row reference", ReasonFunction, "select the columns by name")
		}
		for _, o := range r.outs {
			if o.enc != nil {
				a.refuseCol(o.enc, "a whole-row reference", ReasonFunction, "select the columns by name")
			}
		}
	}
}

func (a *analyzer) resolveRef(sc *scope, cr *pg.ColumnRef) colRes {
	return a.resolve(sc, fieldNames(cr))
}

func (a *analyzer) resolve(sc *scope, f []string) colRes {
	if len(f) == 0 || f[len(f)-1] == "*" {
		return colRes{}
	}
	col := f[len(f)-1]
	if len(f) == 1 {
		// unsure: a scope already passed has a range entry whose columns
		// pgveil does not all know (any table: pgveil knows only the
		// encrypted columns of a configured one). PostgreSQL binds the name
		// to that inner table if it has such a column, so an encrypted
		// column found further out may not be the one meant.
		unsure := false
		for s := sc; s != nil; s = s.parent {
			var hit *colRes
			for _, r := range s.rtes {
				if res, ok := lookupIn(r, col); ok {
					if hit != nil && (hit.enc != nil || res.enc != nil) && hit.enc != res.enc {
						c := hit.enc
						if c == nil {
							c = res.enc
						}
						a.refuseCol(c, "an ambiguous column reference", ReasonUnsupported, "qualify the column with its table")
					}
					if hit == nil {
						h := res
						hit = &h
					}
				}
			}
			if hit != nil {
				if unsure && hit.enc != nil {
					a.refuseCol(hit.enc, "an unqualified column of an outer query", ReasonUnsupported,
						"qualify the column with its table (t.col): a table of the subquery may have a column of that name")
				}
				return *hit
			}
			for _, r := range s.rtes {
				unsure = unsure || !r.derived || r.unknown
			}
		}
		return colRes{}
	}
	if r := a.findRTE(sc, f[:len(f)-1]); r != nil {
		res, _ := lookupIn(r, col)
		return res
	}
	return colRes{}
}

func (a *analyzer) fromItem(n *pg.Node, sc *scope) {
	if n == nil {
		return
	}
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		rv := x.RangeVar
		name := rv.Relname
		if rv.Alias != nil {
			name = rv.Alias.Aliasname
		}
		if rv.Schemaname == "" {
			if c := sc.cte(rv.Relname); c != nil {
				outs := c.outs
				if rv.Alias != nil && len(rv.Alias.Colnames) > 0 {
					outs = renameOuts(outs, rv.Alias.Colnames)
				}
				sc.rtes = append(sc.rtes, &rte{name: name, derived: true, outs: outs, unknown: c.unknown})
				return
			}
		}
		t := a.table(rv.Schemaname, rv.Relname)
		if t != nil {
			a.tables[t.qname] = true
			if rv.Alias != nil && len(rv.Alias.Colnames) > 0 {
				a.refuseTable(t, "column aliases on an encrypted table", ReasonUnsupported, "alias the columns in the select list instead")
			}
		}
		schema := ""
		if rv.Alias == nil {
			schema = rv.Schemaname
			if schema == "" {
				schema = "public"
			}
		}
		sc.rtes = append(sc.rtes, &rte{name: name, schema: schema, table: t})
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		before := len(sc.rtes)
		a.fromItem(j.Larg, sc)
		mid := len(sc.rtes)
		a.fromItem(j.Rarg, sc)
		if j.IsNatural {
			for _, r := range sc.rtes[before:] {
				if r.table != nil {
					a.refuseTable(r.table, "NATURAL JOIN", ReasonUnsupported, "join with ON on the blind index columns")
				}
			}
		}
		for _, u := range j.UsingClause {
			name := u.GetString_().GetSval()
			for _, r := range sc.rtes[before:] {
				if res, ok := lookupIn(r, name); ok && res.enc != nil {
					a.refuseCol(res.enc, "JOIN USING", ReasonUnsupported, "join with ON a.col = b.col on columns sharing a hash domain")
				}
			}
		}
		_ = mid
		a.expr(j.Quals, sc, use{"a JOIN condition", ReasonUnsupported})
		if j.Alias != nil {
			// (a JOIN b) AS j: j names the join's columns and hides the
			// inner names, as in PostgreSQL.
			outs, unknown := a.outsOf(sc.rtes[before:])
			if len(j.Alias.Colnames) > 0 {
				if unknown {
					for _, o := range outs {
						if o.enc != nil {
							a.refuseCol(o.enc, "column aliases on a join of an encrypted table", ReasonUnsupported, "alias the columns in the select list instead")
						}
					}
				}
				outs = renameOuts(outs, j.Alias.Colnames)
			}
			sc.rtes = append(sc.rtes[:before], &rte{name: j.Alias.Aliasname, derived: true, outs: outs, unknown: unknown})
		}
	case *pg.Node_RangeSubselect:
		rs := x.RangeSubselect
		outs, unknown := a.selectNode(rs.Subquery, sc)
		name := ""
		if rs.Alias != nil {
			name = rs.Alias.Aliasname
			if len(rs.Alias.Colnames) > 0 {
				outs = renameOuts(outs, rs.Alias.Colnames)
			}
		}
		sc.rtes = append(sc.rtes, &rte{name: name, derived: true, outs: outs, unknown: unknown})
	case *pg.Node_RangeTableSample:
		// t TABLESAMPLE method (args): the table as itself.
		ts := x.RangeTableSample
		a.fromItem(ts.Relation, sc)
		for _, arg := range ts.Args {
			a.expr(arg, sc, use{"TABLESAMPLE", ReasonFunction})
		}
		a.expr(ts.Repeatable, sc, use{"TABLESAMPLE", ReasonFunction})
	case *pg.Node_RangeFunction:
		for _, f := range x.RangeFunction.Functions {
			a.generic(f.ProtoReflect(), sc, use{"a function in FROM", ReasonFunction})
		}
		name := ""
		if x.RangeFunction.Alias != nil {
			name = x.RangeFunction.Alias.Aliasname
		}
		sc.rtes = append(sc.rtes, &rte{name: name, derived: true})
	default:
		a.generic(n.ProtoReflect(), sc, use{"a FROM item", ReasonUnsupported})
	}
}

// ---- expressions

var genericOps = map[string]string{
	"CoalesceExpr": "COALESCE", "CaseExpr": "CASE", "CaseWhen": "CASE", "MinMaxExpr": "GREATEST/LEAST",
	"RowExpr": "ROW()", "A_ArrayExpr": "ARRAY[]", "A_Indirection": "a subscript",
	"CollateClause": "COLLATE", "BooleanTest": "IS TRUE/FALSE", "XmlExpr": "an XML function",
	"GroupingSet": "GROUPING SETS", "GroupingFunc": "GROUPING()", "SQLValueFunction": "a function",
}

func (a *analyzer) expr(n *pg.Node, sc *scope, u use) {
	if n == nil || n.Node == nil {
		return
	}
	switch x := n.Node.(type) {
	case *pg.Node_ColumnRef:
		if res := a.resolveRef(sc, x.ColumnRef); res.enc != nil {
			a.refuseCol(res.enc, u.op, u.reason, "")
		}
		a.wholeRow(sc, x.ColumnRef)
	case *pg.Node_ParamRef, *pg.Node_AConst, *pg.Node_SetToDefault:
	case *pg.Node_AExpr:
		a.aexpr(x.AExpr, sc)
	case *pg.Node_BoolExpr:
		for _, arg := range x.BoolExpr.Args {
			a.expr(arg, sc, use{"a boolean test", ReasonFunction})
		}
	case *pg.Node_NullTest:
		if cr := x.NullTest.Arg.GetColumnRef(); cr != nil {
			return // IS [NOT] NULL works on ciphertext
		}
		a.expr(x.NullTest.Arg, sc, use{"IS NULL on an expression", ReasonFunction})
	case *pg.Node_FuncCall:
		a.funcCall(x.FuncCall, sc)
	case *pg.Node_TypeCast:
		tn := ""
		if x.TypeCast.TypeName != nil && len(x.TypeCast.TypeName.Names) > 0 {
			tn = x.TypeCast.TypeName.Names[len(x.TypeCast.TypeName.Names)-1].GetString_().GetSval()
		}
		if (tn == "text" || tn == "varchar") && len(x.TypeCast.TypeName.Typmods) == 0 && x.TypeCast.Arg.GetColumnRef() != nil &&
			(u.reason == ReasonLike || u.reason == ReasonRange || u.reason == ReasonOrderBy || u.reason == ReasonGroupBy || u.reason == ReasonDistinct || strings.HasPrefix(u.op, "function ")) {
			// col::text LIKE ... is refused as what it is used for
			a.expr(x.TypeCast.Arg, sc, u)
			return
		}
		a.expr(x.TypeCast.Arg, sc, use{"a cast to " + tn, ReasonFunction})
	case *pg.Node_SubLink:
		a.sublink(x.SubLink, sc, u)
	case *pg.Node_SelectStmt:
		a.selectStmt(x.SelectStmt, sc)
	case *pg.Node_SortBy:
		a.expr(x.SortBy.Node, sc, u)
	case *pg.Node_List:
		for _, it := range x.List.Items {
			a.expr(it, sc, u)
		}
	case *pg.Node_RangeVar:
		a.collectTables(x.RangeVar.ProtoReflect())
	default:
		name := string(n.ProtoReflect().Descriptor().Name())
		m := n.ProtoReflect()
		if od := m.Descriptor().Oneofs(); od.Len() > 0 {
			if fd := m.WhichOneof(od.Get(0)); fd != nil && fd.Message() != nil {
				name = string(fd.Message().Name())
			}
		}
		op, ok := genericOps[name]
		if !ok {
			op = name
		}
		a.generic(m, sc, use{op, ReasonFunction})
	}
}

// generic walks every node below m with the given use.
func (a *analyzer) generic(m protoreflect.Message, sc *scope, u use) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		visit := func(mm protoreflect.Message) {
			switch x := mm.Interface().(type) {
			case *pg.Node:
				a.expr(x, sc, u)
			case *pg.SelectStmt:
				a.selectStmt(x, sc)
			case *pg.RangeVar:
				a.collectTables(mm)
			default:
				a.generic(mm, sc, u)
			}
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
		} else {
			visit(v.Message())
		}
		return true
	})
}

func (a *analyzer) funcCall(f *pg.FuncCall, sc *scope) {
	name := ""
	if len(f.Funcname) > 0 {
		name = strings.ToLower(f.Funcname[len(f.Funcname)-1].GetString_().GetSval())
	}
	if name == "set_config" {
		// its setting name is a constant the plan cache does not key on
		a.searchPath = true
	}
	if name == "count" && len(f.Args) == 1 {
		if cr := f.Args[0].GetColumnRef(); cr != nil {
			if res := a.resolveRef(sc, cr); res.enc != nil && f.AggDistinct {
				a.refuseCol(res.enc, "count(DISTINCT)", ReasonDistinct, "count(DISTINCT) compares values; ciphertexts of equal values differ (count the blind index instead)")
			}
			goto rest
		}
	}
	for _, arg := range f.Args {
		a.expr(arg, sc, use{"function " + name + "()", ReasonFunction})
	}
rest:
	for _, o := range f.AggOrder {
		a.expr(o, sc, use{"ORDER BY inside " + name + "()", ReasonOrderBy})
	}
	a.expr(f.AggFilter, sc, use{"FILTER", ReasonFunction})
	if f.Over != nil {
		for _, p := range f.Over.PartitionClause {
			a.expr(p, sc, use{"PARTITION BY", ReasonGroupBy})
		}
		for _, o := range f.Over.OrderClause {
			a.expr(o, sc, use{"ORDER BY in a window", ReasonOrderBy})
		}
	}
}

func (a *analyzer) sublink(s *pg.SubLink, sc *scope, u use) {
	outs, _ := a.selectNode(s.Subselect, sc)
	if s.Testexpr == nil {
		// (SELECT col ...) or ARRAY(SELECT col ...) used inside an
		// expression: its value is a token there, and what the expression
		// computes from it (a comparison, a function, a cast) would be
		// computed on ciphertext. Only a bare scalar subquery in the select
		// list is decrypted (targets).
		if (s.SubLinkType == pg.SubLinkType_EXPR_SUBLINK || s.SubLinkType == pg.SubLinkType_ARRAY_SUBLINK) && len(outs) > 0 && outs[0].enc != nil {
			a.refuseCol(outs[0].enc, "a subquery's value in "+u.op, u.reason,
				"select the subquery on its own in the select list, or compare the column inside the subquery")
		}
		return
	}
	if cr := s.Testexpr.GetColumnRef(); cr != nil {
		if res := a.resolveRef(sc, cr); res.enc != nil {
			a.refuseCol(res.enc, "comparison with a subquery", ReasonUnsupported, "compare with literals or parameters, or join on the blind index")
		}
	}
	if len(outs) > 0 && outs[0].enc != nil {
		a.refuseCol(outs[0].enc, "comparison with a subquery", ReasonUnsupported, "compare with literals or parameters, or join on the blind index")
	}
	a.expr(s.Testexpr, sc, use{"comparison with a subquery", ReasonUnsupported})
}

func opName(x *pg.A_Expr) string {
	if len(x.Name) == 0 {
		return ""
	}
	return x.Name[len(x.Name)-1].GetString_().GetSval()
}

// encSide resolves n when it is a column reference to an encrypted column.
func (a *analyzer) encSide(n *pg.Node, sc *scope) (*pg.ColumnRef, colRes) {
	if cr := n.GetColumnRef(); cr != nil {
		return cr, a.resolveRef(sc, cr)
	}
	return nil, colRes{}
}

type lookupOp uint8

const (
	lkEq lookupOp = iota
	lkNe
	lkDistinct
	lkNotDistinct
)

var lookupOpText = [...]string{" = ", " <> ", " IS DISTINCT FROM ", " IS NOT DISTINCT FROM "}

type lookupForm uint8

const (
	lfScalar lookupForm = iota
	lfIn
	lfAnyValue
	lfAnyArray
)

var opTokens = []string{"=", "<>", "!=", "is", "not", "distinct", "from"}

func (a *analyzer) aexpr(x *pg.A_Expr, sc *scope) {
	op := opName(x)
	lcr, l := a.encSide(x.Lexpr, sc)
	rcr, r := a.encSide(x.Rexpr, sc)
	if l.enc == nil && r.enc == nil {
		u := use{"operator " + op, ReasonFunction}
		switch x.Kind {
		case pg.A_Expr_Kind_AEXPR_LIKE, pg.A_Expr_Kind_AEXPR_ILIKE, pg.A_Expr_Kind_AEXPR_SIMILAR:
			u = use{likeName(x.Kind), ReasonLike}
		case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
			u = use{"BETWEEN", ReasonRange}
		case pg.A_Expr_Kind_AEXPR_NULLIF:
			u = use{"NULLIF", ReasonFunction}
		}
		if x.Kind == pg.A_Expr_Kind_AEXPR_OP {
			if isRangeOp(op) {
				u.reason = ReasonRange
			} else if isRegexOp(op) {
				u = use{"regular expression match " + op, ReasonLike}
			}
		}
		a.expr(x.Lexpr, sc, u)
		a.expr(x.Rexpr, sc, u)
		return
	}
	enc := l.enc
	if enc == nil {
		enc = r.enc
	}
	switch x.Kind {
	case pg.A_Expr_Kind_AEXPR_LIKE, pg.A_Expr_Kind_AEXPR_ILIKE, pg.A_Expr_Kind_AEXPR_SIMILAR:
		a.refuseCol(enc, likeName(x.Kind), ReasonLike, "")
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		a.refuseCol(enc, "BETWEEN", ReasonRange, "")
	case pg.A_Expr_Kind_AEXPR_NULLIF:
		a.refuseCol(enc, "NULLIF", ReasonFunction, "")
	case pg.A_Expr_Kind_AEXPR_OP, pg.A_Expr_Kind_AEXPR_DISTINCT, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		var lk lookupOp
		switch {
		case x.Kind == pg.A_Expr_Kind_AEXPR_DISTINCT:
			lk = lkDistinct
		case x.Kind == pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
			lk = lkNotDistinct
		case op == "=":
			lk = lkEq
		case op == "<>" || op == "!=":
			lk = lkNe
		case isRangeOp(op):
			a.refuseCol(enc, "operator "+op, ReasonRange, "")
		case isRegexOp(op):
			a.refuseCol(enc, "regular expression match "+op, ReasonLike, "")
		default:
			a.refuseCol(enc, "operator "+op, ReasonFunction, "")
		}
		if len(x.Name) > 1 {
			a.refuseCol(enc, "OPERATOR()", ReasonFunction, "")
		}
		if l.enc != nil && r.enc != nil {
			a.colEquality(lcr, l, rcr, r)
			return
		}
		cr, res, other, colFirst := lcr, l, x.Rexpr, true
		if l.enc == nil {
			cr, res, other, colFirst = rcr, r, x.Lexpr, false
		}
		if other.GetColumnRef() != nil {
			a.refuseCol(enc, "comparison with another column", ReasonUnsupported, "compare with literals or parameters, or with a column sharing its hash domain")
		}
		v, ok := a.value(other, false)
		if !ok || v.kind == vDefault {
			if other.GetSubLink() != nil {
				a.sublink(other.GetSubLink(), sc, use{"comparison with a subquery", ReasonUnsupported})
			}
			a.refuseCol(enc, "comparison with an expression", ReasonUnsupported, "compare with a literal or a parameter")
		}
		a.checkLookup(res)
		cs := a.mustColSpan(cr, enc)
		var start, end int
		if colFirst {
			v = a.widenParens(cs.end, v)
			if !a.onlyTokens(cs.end, v.outerStart, opTokens...) {
				a.refuseCol(enc, "this form of comparison", ReasonUnsupported, "write col = value without parentheses around the column")
			}
			start, end = cs.start, v.outerEnd
		} else {
			if !a.onlyTokens(v.outerEnd, cs.start, opTokens...) {
				a.refuseCol(enc, "this form of comparison", ReasonUnsupported, "write col = value without parentheses around the column")
			}
			start, end = v.outerStart, cs.end
		}
		a.lookup(res, cs, lk, lfScalar, []valRef{v}, start, end)
	case pg.A_Expr_Kind_AEXPR_IN:
		if l.enc == nil {
			a.refuseCol(enc, "IN with an encrypted column in the list", ReasonUnsupported, "")
		}
		lk := lkEq
		if op == "<>" {
			lk = lkNe
		}
		items := x.Rexpr.GetList().GetItems()
		if len(items) == 0 {
			a.refuseCol(enc, "IN", ReasonUnsupported, "")
		}
		vals := make([]valRef, len(items))
		for i, it := range items {
			v, ok := a.value(it, false)
			if !ok || v.kind == vDefault {
				a.refuseCol(enc, "IN with an expression in the list", ReasonUnsupported, "list literals or parameters")
			}
			vals[i] = v
		}
		a.checkLookup(l)
		cs := a.mustColSpan(lcr, enc)
		// Parentheses around a list item are the item's; the list's own
		// opening parenthesis is not.
		listOpen := cs.end
		for tk := a.nextSig(listOpen); tk.kind != tkEOF && tk.start < vals[0].outerStart; tk = a.nextSig(listOpen) {
			listOpen = tk.end
			if a.tokText(tk) == "(" {
				break
			}
		}
		for i := range vals {
			from := listOpen
			if i > 0 {
				from = vals[i-1].outerEnd
			}
			vals[i] = a.widenParens(from, vals[i])
		}
		if !a.onlyTokens(cs.end, vals[0].outerStart, "not", "in", "(") {
			a.refuseCol(enc, "this form of IN", ReasonUnsupported, "write col IN (v1, v2, ...)")
		}
		for i := 1; i < len(vals); i++ {
			if !a.onlyTokens(vals[i-1].outerEnd, vals[i].outerStart, ",") {
				a.refuseCol(enc, "this form of IN", ReasonUnsupported, "write col IN (v1, v2, ...)")
			}
		}
		close := a.nextSig(vals[len(vals)-1].outerEnd)
		if a.tokText(close) != ")" {
			a.refuseCol(enc, "this form of IN", ReasonUnsupported, "write col IN (v1, v2, ...)")
		}
		a.lookup(l, cs, lk, lfIn, vals, cs.start, close.end)
	case pg.A_Expr_Kind_AEXPR_OP_ANY, pg.A_Expr_Kind_AEXPR_OP_ALL:
		if l.enc == nil {
			a.refuseCol(enc, "ANY/ALL with an encrypted array", ReasonUnsupported, "")
		}
		var lk lookupOp
		switch {
		case x.Kind == pg.A_Expr_Kind_AEXPR_OP_ANY && op == "=":
			lk = lkEq
		case x.Kind == pg.A_Expr_Kind_AEXPR_OP_ALL && (op == "<>" || op == "!="):
			lk = lkNe
		default:
			a.refuseCol(enc, "operator "+op+" with ANY/ALL", ReasonUnsupported, "use = ANY(...) or <> ALL(...)")
		}
		a.checkLookup(l)
		cs := a.mustColSpan(lcr, enc)
		bad := func() {
			a.refuseCol(enc, "this form of ANY", ReasonUnsupported, "write col = ANY($1) with an array parameter or literal")
		}
		if ae := x.Rexpr.GetAArrayExpr(); ae != nil {
			if len(ae.Elements) == 0 {
				bad()
			}
			vals := make([]valRef, len(ae.Elements))
			for i, e := range ae.Elements {
				v, ok := a.value(e, false)
				if !ok || v.kind == vDefault {
					bad()
				}
				vals[i] = v
			}
			loc := int(ae.Location)
			if !a.onlyTokens(cs.end, loc, "=", "<>", "!=", "any", "some", "all", "(") ||
				!a.onlyTokens(loc, vals[0].outerStart, "array", "[") {
				bad()
			}
			for i := 1; i < len(vals); i++ {
				if !a.onlyTokens(vals[i-1].outerEnd, vals[i].outerStart, ",") {
					bad()
				}
			}
			rb := a.nextSig(vals[len(vals)-1].outerEnd)
			rp := a.nextSig(rb.end)
			if a.tokText(rb) != "]" || a.tokText(rp) != ")" {
				bad()
			}
			a.lookup(l, cs, lk, lfAnyArray, vals, cs.start, rp.end)
			return
		}
		v, ok := a.value(x.Rexpr, true)
		if !ok || v.kind == vDefault {
			bad()
		}
		if !a.onlyTokens(cs.end, v.outerStart, "=", "<>", "!=", "any", "some", "all", "(") {
			bad()
		}
		rp := a.nextSig(v.outerEnd)
		if a.tokText(rp) != ")" {
			bad()
		}
		a.lookup(l, cs, lk, lfAnyValue, []valRef{v}, cs.start, rp.end)
	default:
		a.refuseCol(enc, "this operator", ReasonUnsupported, "")
	}
}

func likeName(k pg.A_Expr_Kind) string {
	switch k {
	case pg.A_Expr_Kind_AEXPR_ILIKE:
		return "ILIKE"
	case pg.A_Expr_Kind_AEXPR_SIMILAR:
		return "SIMILAR TO"
	}
	return "LIKE"
}

func isRegexOp(op string) bool {
	switch op {
	case "~", "~*", "!~", "!~*", "~~", "~~*", "!~~", "!~~*":
		return true
	}
	return false
}

func isRangeOp(op string) bool {
	switch op {
	case "<", ">", "<=", ">=":
		return true
	}
	return false
}

func (a *analyzer) checkLookup(res colRes) {
	if !res.enc.searchable() {
		a.refuseCol(res.enc, "equality", ReasonEqualityWithoutIndex, "")
	}
	if !res.hashOK {
		a.refuseCol(res.enc, "a lookup through a subquery or CTE that does not select "+res.enc.blind, ReasonUnsupported,
			"select "+res.enc.blind+" in the subquery too, or filter inside it")
	}
}

func (a *analyzer) colEquality(lcr *pg.ColumnRef, l colRes, rcr *pg.ColumnRef, r colRes) {
	if l.enc.domain != r.enc.domain {
		a.refuseCol(l.enc, "comparison with "+r.enc.label+" (another hash domain)", ReasonUnsupported,
			"give both columns the same hash_domain to compare them")
	}
	a.checkLookup(l)
	a.checkLookup(r)
	ls := a.mustColSpan(lcr, l.enc)
	rs := a.mustColSpan(rcr, r.enc)
	a.addEdit(ls.lastStart, ls.lastEnd, txt(identText(l.enc.blind, ls.quotedLast)))
	a.addEdit(rs.lastStart, rs.lastEnd, txt(identText(r.enc.blind, rs.quotedLast)))
}

// checkOperandType raises PostgreSQL's error for a number compared
// with an encrypted (text) column: text = integer has no operator, so
// PostgreSQL refuses `email = 42` where the blind-index lookup pgveil would
// make of it answers. A cast (`42::text`) or a quoted constant has one.
func (a *analyzer) checkOperandType(v valRef, c *colRule, cs refSpan, lk lookupOp, form lookupForm) {
	if v.kind != vLit || v.idx >= len(a.lits) {
		return
	}
	t := constType(a.sql, a.lits[v.idx])
	if t == ctString || strings.Trim(a.t[v.outerStart:v.innerStart], "( \t\r\n") != "" ||
		strings.Trim(a.t[v.innerEnd:v.outerEnd], ") \t\r\n") != "" {
		return
	}
	if form == lfAnyValue {
		a.refuse(&RefusalError{Table: c.table.qname, Column: c.name, Op: "ANY", Reason: ReasonUnsupported, Code: codeWrongObjectType,
			Message: "pgveil: op ANY/ALL (array) requires array on right side"})
	}
	op := "="
	if lk == lkNe {
		op = "<>"
	}
	left, right := "text", constTypeName(t)
	if v.outerEnd <= cs.start {
		left, right = right, left
	}
	a.refuse(&RefusalError{Table: c.table.qname, Column: c.name, Op: "operator", Reason: ReasonUnsupported, Code: codeUndefinedFunction,
		Message: "pgveil: operator does not exist: " + left + " " + op + " " + right,
		Hint:    "No operator matches the given name and argument types. You might need to add explicit type casts."})
}

// lookup replaces t[start:end] (a comparison of the encrypted column at cs
// with vals) by the same comparison on the blind index.
func (a *analyzer) lookup(res colRes, cs refSpan, lk lookupOp, form lookupForm, vals []valRef, start, end int) {
	c := res.enc
	for _, v := range vals {
		a.checkOperandType(v, c, cs, lk, form)
	}
	hashCol := a.t[cs.start:cs.lastStart] + identText(c.blind, cs.quotedLast)
	var ps []piece
	if a.r.opts.HashFallbacks == 0 {
		ps = append(ps, txt(hashCol))
		switch form {
		case lfScalar:
			ps = append(ps, txt(lookupOpText[lk]))
			ps = append(ps, a.valPieces(vals[0], a.action(OpHash, c), true)...)
		case lfIn, lfAnyArray:
			switch {
			case form == lfIn && lk == lkEq:
				ps = append(ps, txt(" IN ("))
			case form == lfIn:
				ps = append(ps, txt(" NOT IN ("))
			case lk == lkEq:
				ps = append(ps, txt(" = ANY(ARRAY["))
			default:
				ps = append(ps, txt(" <> ALL(ARRAY["))
			}
			for i, v := range vals {
				if i > 0 {
					ps = append(ps, txt(", "))
				}
				ps = append(ps, a.valPieces(v, a.action(OpHash, c), true)...)
			}
			if form == lfIn {
				ps = append(ps, txt(")"))
			} else {
				ps = append(ps, txt("])"))
			}
		case lfAnyValue:
			if lk == lkEq {
				ps = append(ps, txt(" = ANY("))
			} else {
				ps = append(ps, txt(" <> ALL("))
			}
			ps = append(ps, a.valPieces(vals[0], a.action(OpHashArray, c), true)...)
			ps = append(ps, txt(")"))
		}
	} else {
		if lk == lkDistinct || lk == lkNotDistinct {
			a.refuseCol(c, "IS [NOT] DISTINCT FROM while fallback hash keys are set", ReasonUnsupported, "use = or <> until the rehash is done")
		}
		ps = append(ps, txt(hashCol))
		if lk == lkEq {
			ps = append(ps, txt(" = ANY("))
		} else {
			ps = append(ps, txt(" <> ALL("))
		}
		for i, v := range vals {
			if i > 0 {
				ps = append(ps, txt(" || "))
			}
			switch {
			case form == lfAnyValue:
				ps = append(ps, a.core(v, a.action(OpHashArray, c)), txt("::text[]"))
			case v.kind == vNull:
				ps = append(ps, txt("ARRAY[NULL]::text[]"))
			default:
				ps = append(ps, a.core(v, a.action(OpHashAll, c)), txt("::text[]"))
			}
		}
		ps = append(ps, txt(")"))
	}
	if a.r.migrating() {
		// (hash lookup OR (blind index not filled yet AND the original
		// comparison on the plaintext))
		out := []piece{txt("(")}
		out = append(out, ps...)
		out = append(out, txt(" OR ("+hashCol+" IS NULL AND "))
		pos := start
		for _, v := range vals {
			out = append(out, txt(a.t[pos:v.innerStart]), a.core(v, Action{}))
			pos = v.innerEnd
		}
		out = append(out, txt(a.t[pos:end]), txt("))"))
		ps = out
	}
	a.addEdit(start, end, ps...)
}

// ---- writes

func (a *analyzer) targetRTE(rv *pg.RangeVar) (*rte, *tableRule) {
	t := a.table(rv.Schemaname, rv.Relname)
	if t != nil {
		a.tables[t.qname] = true
	}
	name, schema := rv.Relname, rv.Schemaname
	if schema == "" {
		schema = "public"
	}
	if rv.Alias != nil {
		name, schema = rv.Alias.Aliasname, ""
	}
	return &rte{name: name, schema: schema, table: t}, t
}

func (a *analyzer) insert(s *pg.InsertStmt, parent *scope) ([]outCol, bool) {
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	target, t := a.targetRTE(s.Relation)
	sel := s.SelectStmt.GetSelectStmt()
	if t == nil {
		if s.SelectStmt != nil {
			a.stmt(s.SelectStmt, sc)
		}
		a.onConflict(s.OnConflictClause, &scope{parent: sc, rtes: []*rte{target, {name: "excluded"}}}, nil)
		return a.targets(s.ReturningList, &scope{parent: sc, rtes: []*rte{target}})
	}
	encAt := map[int]*colRule{}
	blindAt := map[int]*colRule{} // blind-index columns the client names itself
	encPos := map[*colRule]int{}
	listed := map[string]bool{}
	for i, c := range s.Cols {
		rt := c.GetResTarget()
		listed[rt.Name] = true
		if hc := t.hashCols[rt.Name]; hc != nil {
			blindAt[i] = hc
		}
		if cr := t.cols[rt.Name]; cr != nil {
			if _, dup := encPos[cr]; !dup {
				encPos[cr] = i
			}
			if len(rt.Indirection) > 0 {
				a.refuseCol(cr, "assigning to a part of an encrypted column", ReasonUnsupported, "assign the whole column")
			}
			encAt[i] = cr
		}
	}
	if len(s.Cols) == 0 && s.SelectStmt != nil {
		a.refuseTable(t, "INSERT without a column list", ReasonUnsupported,
			"name the columns: INSERT INTO "+t.name+" (col, ...) VALUES (...), so pgveil knows which values go to encrypted columns")
	}
	// blind-index columns to append, each with the position it hashes
	type hashAdd struct {
		c   *colRule
		pos int
	}
	var adds []hashAdd
	for i := range s.Cols {
		if cr := encAt[i]; cr != nil && cr.blind != "" && !listed[cr.blind] {
			dup := false
			for _, h := range adds {
				dup = dup || h.c == cr
			}
			if !dup {
				adds = append(adds, hashAdd{cr, i})
			}
		}
	}
	if sel != nil {
		plain := len(sel.ValuesLists) > 0 && (sel.Op == pg.SetOperation_SETOP_NONE || sel.Op == pg.SetOperation_SET_OPERATION_UNDEFINED) &&
			sel.WithClause == nil && len(sel.SortClause) == 0 && sel.LimitCount == nil && sel.LimitOffset == nil
		if !plain && a.insertFromValues(s, t, sel, encAt, blindAt) {
			// SQLAlchemy 2's ordered bulk insert, handled
		} else if !plain {
			for i := range s.Cols {
				if cr := encAt[i]; cr != nil {
					a.refuseCol(cr, "INSERT ... SELECT into an encrypted column", ReasonInsertSelect,
						"insert literal values or parameters with INSERT ... VALUES; pgveil cannot encrypt values a query computes")
				}
			}
			a.stmt(s.SelectStmt, sc)
		} else {
			listClose := a.scanClose(int(s.Cols[len(s.Cols)-1].GetResTarget().Location))
			var rowCloses []int
			if len(encAt) > 0 {
				rowCloses = a.valuesRows(listClose)
				if len(rowCloses) != len(sel.ValuesLists) {
					a.refuseTable(t, "this form of INSERT ... VALUES", ReasonUnsupported, "write INSERT INTO t (cols) VALUES (...), (...)")
				}
			}
			vsc := &scope{parent: sc}
			for r, row := range sel.ValuesLists {
				items := row.GetList().GetItems()
				if len(encAt) > 0 && len(items) != len(s.Cols) {
					a.refuseTable(t, "INSERT with a VALUES row that does not match the column list", ReasonUnsupported, "give one value per listed column")
				}
				vals := make([]valRef, len(items))
				for i, item := range items {
					cr := encAt[i]
					if cr == nil {
						a.expr(item, vsc, use{"a value", ReasonUnsupported})
						continue
					}
					v, ok := a.value(item, false)
					if !ok {
						a.refuseCol(cr, "INSERT of an expression into an encrypted column", ReasonUnsupported,
							"insert a literal, a parameter, NULL or DEFAULT")
					}
					vals[i] = v
					if v.kind == vParam || v.kind == vLit {
						a.addEdit(v.innerStart, v.innerEnd, a.core(v, a.action(OpEncrypt, cr)))
					}
				}
				for i, hc := range blindAt {
					if i < len(items) {
						pos, ok := encPos[hc]
						var encVal *valRef
						if ok {
							encVal = &vals[pos]
						}
						a.blindValue(items[i], hc, encVal, true)
					}
				}
				if len(adds) > 0 {
					var ps []piece
					for _, h := range adds {
						ps = append(ps, txt(", "), a.core(vals[h.pos], a.action(OpHash, h.c)))
					}
					a.addEdit(rowCloses[r], rowCloses[r], ps...)
				}
			}
			if len(adds) > 0 {
				if listClose < 0 {
					a.refuseTable(t, "this form of INSERT", ReasonUnsupported, "write INSERT INTO t (cols) VALUES (...)")
				}
				var ps []piece
				for _, h := range adds {
					ps = append(ps, txt(", "+identText(h.c.blind, false)))
				}
				a.addEdit(listClose, listClose, ps...)
			}
		}
	}
	a.onConflict(s.OnConflictClause, &scope{parent: sc, rtes: []*rte{target, {name: "excluded", table: t}}}, t)
	return a.targets(s.ReturningList, &scope{parent: sc, rtes: []*rte{target}})
}

// insertFromValues handles the INSERT ... SELECT whose source is a VALUES
// list, as SQLAlchemy 2 writes an ORM bulk insert whose RETURNING rows must
// come back in the order of the objects (insertmanyvalues with
// sort_by_parameter_order):
//
//	INSERT INTO users (email, name) SELECT p0::VARCHAR, p1::VARCHAR
//	FROM (VALUES ('a@x', 'A', 0), ('b@x', 'B', 1)) AS imp_sen(p0, p1, sen_counter)
//	ORDER BY sen_counter RETURNING users.id, users.id AS id__1
//
// Each encrypted column must be selected as a column of the VALUES list
// (cast at most to text or varchar) that nothing else uses; its values in
// the rows are encrypted where they stand, and each blind index becomes one
// more column of the VALUES list (pgveil_h0, ...), holding the hashes and
// selected first. It reports false, having changed nothing, for any other
// shape: the caller refuses it as an INSERT ... SELECT.
func (a *analyzer) insertFromValues(s *pg.InsertStmt, t *tableRule, sel *pg.SelectStmt, encAt, blindAt map[int]*colRule) bool {
	if len(encAt) == 0 || len(blindAt) > 0 || s.OnConflictClause != nil ||
		!(sel.Op == pg.SetOperation_SETOP_NONE || sel.Op == pg.SetOperation_SET_OPERATION_UNDEFINED) ||
		len(sel.TargetList) != len(s.Cols) || len(sel.FromClause) != 1 || sel.WhereClause != nil ||
		len(sel.GroupClause) > 0 || sel.HavingClause != nil || len(sel.DistinctClause) > 0 || len(sel.WindowClause) > 0 ||
		sel.LimitCount != nil || sel.LimitOffset != nil || sel.WithClause != nil || len(sel.LockingClause) > 0 || sel.IntoClause != nil {
		return false
	}
	rs := sel.FromClause[0].GetRangeSubselect()
	if rs == nil || rs.Lateral || rs.Alias == nil || len(rs.Alias.Colnames) == 0 {
		return false
	}
	vsel := rs.Subquery.GetSelectStmt()
	if vsel == nil || len(vsel.ValuesLists) == 0 || vsel.WithClause != nil || len(vsel.SortClause) > 0 ||
		vsel.LimitCount != nil || vsel.LimitOffset != nil {
		return false
	}
	alias := rs.Alias.Aliasname
	cols := make([]string, len(rs.Alias.Colnames))
	for i, n := range rs.Alias.Colnames {
		cols[i] = n.GetString_().GetSval()
	}
	// aliasCol is the VALUES column a reference names, or -1.
	aliasCol := func(n *pg.Node) int {
		cr := n.GetColumnRef()
		if cr == nil || len(cr.Fields) == 0 || len(cr.Fields) > 2 {
			return -1
		}
		if len(cr.Fields) == 2 && cr.Fields[0].GetString_().GetSval() != alias {
			return -1
		}
		name := cr.Fields[len(cr.Fields)-1].GetString_()
		if name == nil {
			return -1
		}
		for i, c := range cols {
			if c == name.GetSval() {
				return i
			}
		}
		return -1
	}
	// The select list: encrypted targets are (cast) VALUES columns, the
	// others a VALUES column under any cast, or a constant.
	encCol := map[int]*colRule{} // VALUES column -> the encrypted column it fills
	var plainRefs []int
	for i, item := range sel.TargetList {
		v := item.GetResTarget().GetVal()
		cast := v.GetTypeCast()
		inner := v
		if cast != nil {
			inner = cast.Arg
		}
		j := aliasCol(inner)
		cr := encAt[i]
		if cr == nil {
			switch {
			case j >= 0:
				plainRefs = append(plainRefs, j)
			case inner.GetAConst() == nil:
				return false
			}
			continue
		}
		if j < 0 || encCol[j] != nil {
			return false
		}
		if cast != nil {
			tn := cast.TypeName
			if tn == nil || len(tn.Names) == 0 || len(tn.Typmods) > 0 || len(tn.ArrayBounds) > 0 || tn.Setof || tn.PctType {
				return false
			}
			if name := tn.Names[len(tn.Names)-1].GetString_().GetSval(); name != "text" && name != "varchar" {
				return false
			}
		}
		encCol[j] = cr
	}
	for _, sb := range sel.SortClause {
		j := aliasCol(sb.GetSortBy().GetNode())
		if j < 0 {
			return false
		}
		plainRefs = append(plainRefs, j)
	}
	for _, j := range plainRefs {
		if encCol[j] != nil {
			return false
		}
	}
	// Where to add the blind indexes: before the first listed column,
	// before the first selected value, at the end of the VALUES list's
	// column names and of every row.
	first := int(sel.TargetList[0].GetResTarget().Location)
	from := a.wordAtDepth0(first, "from")
	if from < 0 {
		return false
	}
	open := a.nextSig(from)
	if a.tokText(open) != "(" {
		return false
	}
	subClose := a.scanClose(open.end)
	if subClose < 0 {
		return false
	}
	tk := a.nextSig(subClose + 1)
	if strings.EqualFold(a.tokText(tk), "as") {
		tk = a.nextSig(tk.end)
	}
	if tk.kind != tkIdent && tk.kind != tkQIdent || identValue(a.tokText(tk)) != alias {
		return false
	}
	namesOpen := a.nextSig(tk.end)
	if a.tokText(namesOpen) != "(" {
		return false
	}
	namesClose := a.scanClose(namesOpen.end)
	rowCloses := a.valuesRows(open.start)
	if namesClose < 0 || len(rowCloses) != len(vsel.ValuesLists) {
		return false
	}
	for _, row := range vsel.ValuesLists {
		if len(row.GetList().GetItems()) != len(cols) {
			return false
		}
	}
	// The shape holds: from here on, refusals are about the values.
	type hashAdd struct {
		c    *colRule
		j    int
		name string
	}
	var adds []hashAdd
	seen := map[*colRule]bool{}
	for i := range s.Cols {
		cr := encAt[i]
		if cr == nil || cr.blind == "" || seen[cr] {
			continue
		}
		seen[cr] = true
		for j, c := range encCol {
			if c == cr {
				adds = append(adds, hashAdd{cr, j, "pgveil_h" + strconv.Itoa(len(adds))})
				break
			}
		}
	}
	vsc := &scope{}
	for r, row := range vsel.ValuesLists {
		items := row.GetList().GetItems()
		vals := make([]valRef, len(items))
		for j, item := range items {
			cr := encCol[j]
			if cr == nil {
				a.expr(item, vsc, use{"a value", ReasonUnsupported})
				continue
			}
			v, ok := a.value(item, false)
			if !ok || v.kind == vDefault {
				a.refuseCol(cr, "INSERT of an expression into an encrypted column", ReasonUnsupported,
					"insert a literal, a parameter or NULL")
			}
			vals[j] = v
			if v.kind == vParam || v.kind == vLit {
				a.addEdit(v.innerStart, v.innerEnd, a.core(v, a.action(OpEncrypt, cr)))
			}
		}
		var ps []piece
		for _, h := range adds {
			ps = append(ps, txt(", "), a.core(vals[h.j], a.action(OpHash, h.c)))
		}
		a.addEdit(rowCloses[r], rowCloses[r], ps...)
	}
	var listed, selected, names []piece
	for _, h := range adds {
		listed = append(listed, txt(identText(h.c.blind, false)+", "))
		selected = append(selected, txt(identText(alias, false)+"."+h.name+", "))
		names = append(names, txt(", "+h.name))
	}
	if len(adds) > 0 {
		a.addEdit(int(s.Cols[0].GetResTarget().Location), int(s.Cols[0].GetResTarget().Location), listed...)
		a.addEdit(first, first, selected...)
		a.addEdit(namesClose, namesClose, names...)
	}
	return true
}

// blindValue handles a value the client writes to a blind-index column
// itself (Rails inserts every column, email_hash = NULL among them). The
// blind index must be the hash of the column it indexes, or lookups miss
// the row: with the encrypted column written in the same statement (enc,
// nil otherwise), pgveil puts that hash in place of the client's value;
// without it, only NULL or DEFAULT pass where they agree with the
// encrypted column (nullOK: an INSERT that leaves it out), anything else is
// refused.
func (a *analyzer) blindValue(item *pg.Node, hc *colRule, enc *valRef, nullOK bool) {
	v, ok := a.value(item, false)
	if enc == nil {
		if nullOK && ok && (v.kind == vNull || v.kind == vDefault) {
			return
		}
		a.refuseCol(hc, "writing its blind index "+hc.blind+" without the column", ReasonUnsupported,
			"write "+hc.name+" and leave "+hc.blind+" out: pgveil fills it")
	}
	if !ok {
		a.refuseCol(hc, "writing an expression to its blind index "+hc.blind, ReasonUnsupported,
			"leave "+hc.blind+" out (or write NULL): pgveil fills it from "+hc.name)
	}
	hash := a.core(*enc, a.action(OpHash, hc))
	switch v.kind {
	case vParam, vLit:
		// The client's value still appears, so a parameter keeps a type
		// and a literal its slot; only the hash is stored.
		a.addEdit(v.outerStart, v.outerEnd, txt("CASE WHEN ("), a.core(v, Action{}), txt(")::text IS NULL THEN "), hash, txt(" ELSE "), hash, txt(" END"))
	default:
		a.addEdit(v.outerStart, v.outerEnd, hash)
	}
}

// valuesRows finds the closing parenthesis of every VALUES row after pos.
func (a *analyzer) valuesRows(pos int) []int {
	if pos < 0 {
		return nil
	}
	l := a.lexAt(pos + 1)
	for {
		tk := l.next()
		if tk.kind == tkEOF || tk.kind == tkPunct && (a.t[tk.start] == ';' || a.t[tk.start] == '(') {
			return nil
		}
		if tk.kind == tkIdent && strings.EqualFold(a.tokText(tk), "values") {
			break
		}
	}
	var closes []int
	for {
		open := a.nextSig(l.pos)
		if a.tokText(open) != "(" {
			return closes
		}
		c := a.scanClose(open.end)
		if c < 0 {
			return closes
		}
		closes = append(closes, c)
		comma := a.nextSig(c + 1)
		if a.tokText(comma) != "," {
			return closes
		}
		l.pos = comma.end
	}
}

func (a *analyzer) onConflict(oc *pg.OnConflictClause, sc *scope, t *tableRule) {
	if oc == nil {
		return
	}
	if inf := oc.Infer; inf != nil {
		renames := map[string]*colRule{}
		for _, e := range inf.IndexElems {
			ie := e.GetIndexElem()
			if ie == nil {
				continue
			}
			if ie.Name != "" && t != nil {
				if cr := t.cols[ie.Name]; cr != nil {
					if !cr.searchable() {
						a.refuseCol(cr, "ON CONFLICT", ReasonEqualityWithoutIndex, "")
					}
					renames[ie.Name] = cr
				}
			}
			if ie.Expr != nil {
				a.expr(ie.Expr, sc, use{"an ON CONFLICT expression", ReasonFunction})
			}
		}
		if len(renames) > 0 {
			open := int(inf.Location)
			if open < 0 || open >= len(a.t) || a.t[open] != '(' {
				for _, cr := range renames {
					a.refuseCol(cr, "this form of ON CONFLICT", ReasonUnsupported, "write ON CONFLICT (col)")
				}
			}
			close := a.scanClose(open + 1)
			l := a.lexAt(open + 1)
			prev := "("
			depth := 0
			for {
				tk := l.next()
				if tk.kind == tkEOF || tk.start >= close {
					break
				}
				if tk.kind == tkSpace || tk.kind == tkComment {
					continue
				}
				s := a.tokText(tk)
				if s == "(" {
					depth++
				} else if s == ")" {
					depth--
				}
				if depth == 0 && (tk.kind == tkIdent || tk.kind == tkQIdent) && (prev == "(" || prev == ",") {
					if cr := renames[identValue(s)]; cr != nil {
						a.addEdit(tk.start, tk.end, txt(identText(cr.blind, tk.kind == tkQIdent)))
					}
				}
				prev = s
			}
		}
		a.expr(inf.WhereClause, sc, use{"ON CONFLICT ... WHERE", ReasonFunction})
	}
	if oc.Action == pg.OnConflictAction_ONCONFLICT_UPDATE {
		a.setList(oc.TargetList, sc, t)
		a.expr(oc.WhereClause, sc, use{"a boolean test", ReasonFunction})
	}
}

// setList handles UPDATE ... SET and ON CONFLICT DO UPDATE SET.
func (a *analyzer) setList(list []*pg.Node, sc *scope, t *tableRule) {
	listed := map[string]bool{}
	for _, n := range list {
		if rt := n.GetResTarget(); rt != nil {
			listed[rt.Name] = true
		}
	}
	// values of the encrypted columns set, for blind indexes set with them
	encVals := map[*colRule]valRef{}
	if t != nil {
		for _, n := range list {
			if rt := n.GetResTarget(); rt != nil && t.cols[rt.Name] != nil && rt.Val.GetMultiAssignRef() == nil {
				if v, ok := a.value(rt.Val, false); ok {
					encVals[t.cols[rt.Name]] = v
				}
			}
		}
	}
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		var cr *colRule
		if t != nil {
			cr = t.cols[rt.Name]
			if hc := t.hashCols[rt.Name]; hc != nil && rt.Val.GetMultiAssignRef() == nil {
				if ref := rt.Val.GetColumnRef(); ref != nil {
					// SET email_hash = EXCLUDED.email_hash (an upsert that
					// lists every column): a blind index copied as it is.
					if f := fieldNames(ref); f[len(f)-1] == hc.blind && listed[hc.name] {
						continue
					}
				}
				if v, ok := encVals[hc]; ok {
					a.blindValue(rt.Val, hc, &v, false)
				} else {
					a.blindValue(rt.Val, hc, nil, false)
				}
				continue
			}
		}
		if mar := rt.Val.GetMultiAssignRef(); mar != nil {
			if cr != nil {
				a.refuseCol(cr, "SET (...) = (...)", ReasonUnsupported, "assign the encrypted column on its own: SET col = value")
			}
			if mar.Colno == 1 {
				a.expr(mar.Source, sc, use{"a value", ReasonUnsupported})
			}
			continue
		}
		if cr == nil {
			a.expr(rt.Val, sc, use{"a value", ReasonUnsupported})
			continue
		}
		if len(rt.Indirection) > 0 {
			a.refuseCol(cr, "assigning to a part of an encrypted column", ReasonUnsupported, "assign the whole column")
		}
		loc := int(rt.Location)
		if v, ok := a.value(rt.Val, false); ok {
			if v.kind == vParam || v.kind == vLit {
				a.addEdit(v.innerStart, v.innerEnd, a.core(v, a.action(OpEncrypt, cr)))
			}
			if cr.blind != "" && !listed[cr.blind] {
				a.addEdit(loc, loc, txt(identText(cr.blind, false)+" = "), a.core(v, a.action(OpHash, cr)), txt(", "))
			}
			continue
		}
		if ref := rt.Val.GetColumnRef(); ref != nil {
			if res := a.resolveRef(sc, ref); res.enc == cr && res.rte != nil && !res.rte.derived {
				if cr.blind != "" && !listed[cr.blind] {
					sp := a.mustColSpan(ref, cr)
					a.addEdit(loc, loc, txt(identText(cr.blind, false)+" = "+a.t[sp.start:sp.lastStart]+identText(cr.blind, sp.quotedLast)+", "))
				}
				continue
			}
		}
		a.refuseCol(cr, "SET to an expression", ReasonUnsupported, "set an encrypted column to a literal, a parameter, NULL, DEFAULT or EXCLUDED.col")
	}
}

func (a *analyzer) update(s *pg.UpdateStmt, parent *scope) ([]outCol, bool) {
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	target, t := a.targetRTE(s.Relation)
	sc.rtes = append(sc.rtes, target)
	for _, f := range s.FromClause {
		a.fromItem(f, sc)
	}
	a.setList(s.TargetList, sc, t)
	a.expr(s.WhereClause, sc, use{"a boolean test", ReasonFunction})
	return a.targets(s.ReturningList, sc)
}

func (a *analyzer) delete(s *pg.DeleteStmt, parent *scope) ([]outCol, bool) {
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	target, _ := a.targetRTE(s.Relation)
	sc.rtes = append(sc.rtes, target)
	for _, f := range s.UsingClause {
		a.fromItem(f, sc)
	}
	a.expr(s.WhereClause, sc, use{"a boolean test", ReasonFunction})
	return a.targets(s.ReturningList, sc)
}

// ---- COPY

func (a *analyzer) copyOptions(opts []*pg.Node, cp *CopyPlan) {
	cp.Format = CopyText
	var delim, quote, escape *byte
	var null *string
	for _, o := range opts {
		de := o.GetDefElem()
		if de == nil {
			continue
		}
		sval := ""
		var cols CopyColumns // FORCE_* options: (col, ...) or *
		switch v := de.Arg.GetNode().(type) {
		case *pg.Node_List:
			for _, it := range v.List.Items {
				cols.Names = append(cols.Names, it.GetString_().GetSval())
			}
		case *pg.Node_AStar:
			cols.All = true
		case *pg.Node_String_:
			sval = v.String_.Sval
		case *pg.Node_Boolean:
			if v.Boolean.Boolval {
				sval = "true"
			} else {
				sval = "false"
			}
		case *pg.Node_Integer:
			sval = strconv.Itoa(int(v.Integer.Ival))
		case nil:
			sval = "true"
		}
		first := func() *byte {
			if sval == "" {
				b := byte(0)
				return &b
			}
			b := sval[0]
			return &b
		}
		switch de.Defname {
		case "format":
			switch strings.ToLower(sval) {
			case "csv":
				cp.Format = CopyCSV
			case "binary":
				cp.Format = CopyBinary
			default:
				cp.Format = CopyText
			}
		case "delimiter":
			delim = first()
		case "quote":
			quote = first()
		case "escape":
			escape = first()
		case "null":
			s := sval
			null = &s
		case "force_not_null":
			cp.ForceNotNull = cols
		case "force_null":
			cp.ForceNull = cols
		case "force_quote":
			cp.ForceQuote = cols
		case "encoding":
			// pgveil encrypts and decrypts the bytes as UTF-8 text: data
			// in another encoding would be stored or returned mangled.
			// Names compare as PostgreSQL's clean_encoding_name does.
			e := strings.Map(func(r rune) rune {
				if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
					return r
				}
				if r >= 'A' && r <= 'Z' {
					return r + 'a' - 'A'
				}
				return -1
			}, sval)
			if e != "utf8" && e != "unicode" {
				table := ""
				if ts := sortedKeys(a.tables); len(ts) > 0 {
					table = ts[0]
				}
				a.refuse(&RefusalError{Table: table, Op: "COPY with ENCODING '" + sval + "'", Reason: ReasonUnsupported,
					Hint: "omit the ENCODING option and send or read the data as UTF-8 (client_encoding UTF8): pgveil encrypts and decrypts text as UTF-8"})
			}
		case "header":
			switch strings.ToLower(sval) {
			case "true", "on", "1", "match":
				cp.Header = true
			default:
				cp.Header = false
			}
		}
	}
	if cp.Format == CopyCSV {
		cp.Delimiter, cp.Null, cp.Quote = ',', "", '"'
	} else {
		cp.Delimiter, cp.Null = '\t', `\N`
	}
	if delim != nil {
		cp.Delimiter = *delim
	}
	if null != nil {
		cp.Null = *null
	}
	if cp.Format == CopyCSV {
		if quote != nil {
			cp.Quote = *quote
		}
		cp.Escape = cp.Quote
		if escape != nil {
			cp.Escape = *escape
		}
	}
}

func (a *analyzer) setCopy(cp *CopyPlan, t *tableRule) {
	if a.copy != nil {
		a.refuseTable(t, "several COPY statements in one query", ReasonUnsupported, "send one COPY per query")
	}
	a.copy = cp
	a.work = true
}

func (a *analyzer) copyStmt(s *pg.CopyStmt, parent *scope) {
	if s.Query != nil {
		outs, unknown, _ := a.stmt(s.Query, parent)
		var first *colRule
		for _, o := range outs {
			if o.enc != nil && first == nil {
				first = o.enc
			}
		}
		if first == nil {
			return
		}
		if s.Filename != "" || s.IsProgram {
			a.refuseCol(first, "COPY to a file or program", ReasonUnsupported, "use COPY (...) TO STDOUT through pgveil")
		}
		if unknown {
			a.refuseCol(first, "COPY (SELECT * ...)", ReasonUnsupported, "name the columns in the query")
		}
		cp := &CopyPlan{In: false}
		a.copyOptions(s.Options, cp)
		if cp.Format == CopyBinary {
			a.refuseCol(first, "COPY in binary format", ReasonUnsupported, "use FORMAT text or csv")
		}
		for i, o := range outs {
			cp.Columns = append(cp.Columns, o.name)
			if o.enc != nil {
				cp.EncryptAt = append(cp.EncryptAt, CopyField{Index: i, Action: a.action(OpEncrypt, o.enc)})
			}
		}
		a.setCopy(cp, first.table)
		return
	}
	if s.Relation == nil {
		return
	}
	target, t := a.targetRTE(s.Relation)
	if t == nil {
		return
	}
	if s.Filename != "" || s.IsProgram {
		a.refuseTable(t, "COPY to or from a file or program", ReasonUnsupported, "use COPY ... FROM STDIN / TO STDOUT through pgveil")
	}
	cp := &CopyPlan{In: s.IsFrom}
	a.copyOptions(s.Options, cp)
	if cp.Format == CopyBinary {
		a.refuseTable(t, "COPY in binary format", ReasonUnsupported, "use FORMAT text or csv")
	}
	var names []string
	for _, n := range s.Attlist {
		names = append(names, n.GetString_().GetSval())
	}
	if !s.IsFrom {
		if len(names) == 0 {
			cp.AllColumns, cp.Table = true, t.qname
		}
		for i, name := range names {
			cp.Columns = append(cp.Columns, name)
			if cr := t.cols[name]; cr != nil {
				cp.EncryptAt = append(cp.EncryptAt, CopyField{Index: i, Action: a.action(OpEncrypt, cr)})
			}
		}
		a.setCopy(cp, t)
		return
	}
	if len(names) == 0 {
		a.refuseTable(t, "COPY FROM without a column list", ReasonUnsupported,
			"name the columns: COPY "+t.name+" (col, ...) FROM STDIN")
	}
	listed := map[string]bool{}
	for _, n := range names {
		listed[n] = true
		if hc := t.hashCols[n]; hc != nil {
			// Its fields would be stored as the client wrote them, not as
			// the hash of the column they index.
			a.refuseCol(hc, "COPY into its blind index "+hc.blind, ReasonUnsupported,
				"leave "+hc.blind+" out of the column list: pgveil fills it from "+hc.name)
		}
	}
	cp.Columns = append(cp.Columns, names...)
	var add []string
	for i, name := range names {
		cr := t.cols[name]
		if cr == nil {
			continue
		}
		cp.EncryptAt = append(cp.EncryptAt, CopyField{Index: i, Action: a.action(OpEncrypt, cr)})
		if cr.blind != "" && !listed[cr.blind] {
			listed[cr.blind] = true
			add = append(add, cr.blind)
			cp.Columns = append(cp.Columns, cr.blind)
			cp.HashFrom = append(cp.HashFrom, CopyField{Index: i, Action: a.action(OpHash, cr)})
		}
	}
	if len(add) > 0 {
		// the column list follows the relation name
		l := a.lexAt(int(s.Relation.Location))
		open := -1
		for {
			tk := l.next()
			if tk.kind == tkEOF {
				break
			}
			if tk.kind == tkPunct && a.t[tk.start] == '(' {
				open = tk.end
				break
			}
		}
		close := a.scanClose(open)
		if open < 0 || close < 0 {
			a.refuseTable(t, "this form of COPY", ReasonUnsupported, "write COPY t (cols) FROM STDIN")
		}
		var ps []piece
		for _, b := range add {
			ps = append(ps, txt(", "+identText(b, false)))
		}
		a.addEdit(close, close, ps...)
	}
	a.expr(s.WhereClause, &scope{parent: parent, rtes: []*rte{target}}, use{"COPY ... WHERE", ReasonFunction})
	a.setCopy(cp, t)
}

// ---- plan assembly

func (a *analyzer) finish() *Plan {
	p := &Plan{Kind: KindPassthrough, NumClientParams: a.maxClient, Tables: sortedKeys(a.tables), DDL: a.ddl,
		Unqualified: a.unqualified, SearchPathChange: a.searchPath,
		UnqualifiedAfterDDL: a.unqAfterDDL, UnqualifiedAfterPathChange: a.unqAfterPath}
	p.Results = a.results
	p.Copy = a.copy
	if !a.work && len(a.results) == 0 {
		return p
	}
	edits := a.edits
	sort.SliceStable(edits, func(i, j int) bool {
		if edits[i].start != edits[j].start {
			return edits[i].start < edits[j].start
		}
		zi, zj := edits[i].end == edits[i].start, edits[j].end == edits[j].start
		if zi != zj {
			return zi
		}
		return edits[i].seq < edits[j].seq
	})
	for i := 1; i < len(edits); i++ {
		if edits[i].start < edits[i-1].end {
			panic(bugf("overlapping edits"))
		}
	}
	covered := func(s, e int) bool {
		k := sort.Search(len(edits), func(i int) bool { return edits[i].end > s })
		for ; k < len(edits) && edits[k].start <= s; k++ {
			if edits[k].start <= s && e <= edits[k].end && edits[k].end > edits[k].start {
				return true
			}
		}
		return false
	}
	// literal spans in t, and client parameter uses outside edits
	var extra []edit
	plainUse := make([]bool, a.maxClient)
	if a.normalized {
		l := a.lexAt(0)
		for {
			tk := l.next()
			if tk.kind == tkEOF {
				break
			}
			if tk.kind != tkParam {
				continue
			}
			n, err := strconv.Atoi(a.t[tk.start+1 : tk.end])
			if err != nil {
				continue
			}
			if n > a.maxClient {
				i := n - a.maxClient - 1
				if i < len(a.lits) && !covered(tk.start, tk.end) {
					extra = append(extra, edit{start: tk.start, end: tk.end, pieces: []piece{{kind: pLit, idx: i}}})
				}
			} else if n >= 1 && !covered(tk.start, tk.end) {
				plainUse[n-1] = true
			}
		}
	} else {
		for i, lit := range a.lits {
			if !covered(lit.Start, lit.End) {
				extra = append(extra, edit{start: lit.Start, end: lit.End, pieces: []piece{{kind: pLit, idx: i}}})
			}
		}
		l := a.lexAt(0)
		for {
			tk := l.next()
			if tk.kind == tkEOF {
				break
			}
			if tk.kind == tkParam {
				if n, err := strconv.Atoi(a.t[tk.start+1 : tk.end]); err == nil && n >= 1 && n <= a.maxClient && !covered(tk.start, tk.end) {
					plainUse[n-1] = true
				}
			}
		}
	}
	if len(extra) > 0 {
		edits = append(edits, extra...)
		sort.SliceStable(edits, func(i, j int) bool {
			if edits[i].start != edits[j].start {
				return edits[i].start < edits[j].start
			}
			zi, zj := edits[i].end == edits[i].start, edits[j].end == edits[j].start
			if zi != zj {
				return zi
			}
			return edits[i].seq < edits[j].seq
		})
	}
	// parameter decisions
	type pkey struct {
		p   int
		act Action
	}
	var inPlace []Action // by client param; Op None = not in place
	hidden := map[pkey]int{}
	for _, e := range edits {
		for _, pc := range e.pieces {
			if pc.kind != pParam {
				continue
			}
			if pc.idx < 0 || pc.idx >= a.maxClient {
				panic(bugf("parameter out of range"))
			}
			if pc.act.Op == OpNone {
				plainUse[pc.idx] = true
			}
		}
	}
	for len(inPlace) < a.maxClient {
		inPlace = append(inPlace, Action{})
	}
	// the first encrypted use in analysis order is the one done in place
	bySeq := make([]edit, len(edits))
	copy(bySeq, edits)
	sort.SliceStable(bySeq, func(i, j int) bool { return bySeq[i].seq < bySeq[j].seq })
	for _, e := range bySeq {
		for _, pc := range e.pieces {
			if pc.kind != pParam || pc.act.Op == OpNone {
				continue
			}
			if inPlace[pc.idx].Op == OpNone && !plainUse[pc.idx] {
				inPlace[pc.idx] = pc.act
				continue
			}
			if inPlace[pc.idx] == pc.act {
				continue
			}
			k := pkey{pc.idx, pc.act}
			if _, ok := hidden[k]; !ok {
				hidden[k] = len(p.Hidden)
				p.Hidden = append(p.Hidden, HiddenParam{From: pc.idx, Action: pc.act})
			}
		}
	}
	last := -1
	for i, act := range inPlace {
		if act.Op != OpNone {
			last = i
		}
	}
	if last >= 0 {
		p.ClientParams = inPlace[:last+1]
	}
	var b strings.Builder
	b.Grow(len(a.t) + 64)
	prev := 0
	for _, e := range edits {
		b.WriteString(a.t[prev:e.start])
		for _, pc := range e.pieces {
			switch pc.kind {
			case pText:
				b.WriteString(pc.text)
			case pLit:
				p.Slots = append(p.Slots, Slot{Offset: b.Len(), Literal: pc.idx, Action: pc.act})
			case pParam:
				n := pc.idx + 1
				if pc.act.Op != OpNone && inPlace[pc.idx] != pc.act {
					n = a.maxClient + 1 + hidden[pkey{pc.idx, pc.act}]
				}
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(n))
			}
		}
		prev = e.end
	}
	b.WriteString(a.t[prev:])
	p.SQL = b.String()
	p.Kind = KindRewrite
	return p
}
