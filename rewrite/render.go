package rewrite

import (
	"bytes"
	"fmt"
)

// Render builds the statement text to send for a KindRewrite plan: Plan.SQL
// with every Slot filled. sql and lits are the original text and the
// literals Rewriter.Plan returned with the plan. A Slot whose Action.Op is
// OpNone gets the original literal text verbatim; any other slot gets
// transform(action, decoded value) rendered as a quoted SQL string
// constant (” doubled; E” with backslashes doubled if the result has
// any, so the text means the same whatever standard_conforming_strings
// says). Render appends to dst and returns it. It does not call transform
// for OpNone slots; a transform error is returned as is. transform must
// not modify the value it is given: it may be a view of sql.
func (p *Plan) Render(dst []byte, sql string, lits []Literal, transform func(a Action, value []byte) ([]byte, error)) ([]byte, error) {
	prev := 0
	for _, s := range p.Slots {
		if s.Offset < prev || s.Offset > len(p.SQL) || s.Literal < 0 || s.Literal >= len(lits) {
			return dst, fmt.Errorf("pgveil: BUG: rewrite: plan slot %d does not fit the statement", s.Literal)
		}
		dst = append(dst, p.SQL[prev:s.Offset]...)
		prev = s.Offset
		lit := lits[s.Literal]
		if lit.Start < 0 || lit.End > len(sql) || lit.Start >= lit.End {
			return dst, fmt.Errorf("pgveil: BUG: rewrite: literal %d out of range", s.Literal)
		}
		if s.Action.Op == OpNone {
			dst = append(dst, sql[lit.Start:lit.End]...)
			continue
		}
		v, ok := lit.view(sql)
		if !ok {
			var err error
			if v, err = lit.Value(sql); err != nil {
				return dst, fmt.Errorf("pgveil: malformed constant for %s: %w", s.Action.Column, err)
			}
		}
		out, err := transform(s.Action, v)
		if err != nil {
			return dst, err
		}
		dst = AppendQuoted(dst, out)
	}
	dst = append(dst, p.SQL[prev:]...)
	return dst, nil
}

// AppendQuoted appends v as a SQL string constant.
func AppendQuoted(dst, v []byte) []byte {
	if bytes.IndexByte(v, '\'') < 0 && bytes.IndexByte(v, '\\') < 0 {
		// Tokens and blind indexes (base64 and hex) always take this path.
		dst = append(dst, '\'')
		dst = append(dst, v...)
		return append(dst, '\'')
	}
	if bytes.IndexByte(v, '\\') >= 0 {
		dst = append(dst, 'E', '\'')
		for _, c := range v {
			switch c {
			case '\'':
				dst = append(dst, '\'', '\'')
			case '\\':
				dst = append(dst, '\\', '\\')
			default:
				dst = append(dst, c)
			}
		}
		return append(dst, '\'')
	}
	dst = append(dst, '\'')
	for _, c := range v {
		if c == '\'' {
			dst = append(dst, '\'')
		}
		dst = append(dst, c)
	}
	return append(dst, '\'')
}
