package proxy

// standard_conforming_strings.
//
// pgveil's lexer and pg_query read a string literal '...' as PostgreSQL does
// with standard_conforming_strings on (the default since PostgreSQL 9.1):
// a backslash is an ordinary character. With it off, PostgreSQL reads
// backslash escapes in '...' too, and the two readings disagree on what a
// literal holds and even on where it ends ('x\', ...): pgveil would encrypt
// one value while PostgreSQL stores another, in plaintext. The backslash is
// the only difference between the two readings: a text without one reads
// the same either way. So pgveil follows the setting and refuses, while it
// is off or may have changed, every statement text that holds a backslash
// and may touch a configured table (rewrite.Rules.Mentions, which reads
// words and not literals, so its "no" holds under either reading).
// Statements on other tables pass, as do statements without a backslash
// and those prepared while it was on (parameters are values, not literals).
//
// PostgreSQL reads a statement's literals when it parses it: a simple
// Query's whole text at once, before running any of it (so a SET in it
// does not change how the rest of that text is read), a Parse when it
// comes to it, after everything sent before has run. It reports the
// setting in ParameterStatus at login and, from version 14, right before
// the ReadyForQuery that follows a change (older versions at once). The
// server side records each report (scsState.off). Between a message that
// changes the setting and that ReadyForQuery, the value a later message
// will be read with is not known yet: the client side remembers
// (scsState.changeAt) the expect entry of the last message forwarded that
// may change it, the server side (rfqAt) the entry the last ReadyForQuery
// answered, and a text with a backslash that may touch a configured table
// is refused while the one is ahead of the other (pipelined after a SET).
//
// What may change it is read from the text (scsEffect), erring on the side
// of "may": any text naming standard_conforming_strings or set_config (in
// a string or comment too) or holding U&"...", any RESET, DISCARD or DO
// statement, any FunctionCall; and, once a change was made inside a
// transaction that is still open (idleAt), COMMIT, ROLLBACK (TO), END,
// ABORT and PREPARE TRANSACTION, which undo it. A function that changes the
// setting from dynamic SQL is seen only at its report, as is a change of
// the server's configuration (a reload applies to the next statement a
// backend reads, which pgveil has let through by then).

import (
	"strings"
	"sync/atomic"
)

// errSCSOff refuses a statement on a configured table while
// standard_conforming_strings is off.
var errSCSOff = &pgError{code: codeFeatureNotSupported,
	msg:  "pgveil: standard_conforming_strings is off; pgveil reads string literals only as with it on, and this statement on an encrypted table holds a backslash",
	hint: "SET standard_conforming_strings = on (PostgreSQL's default), or pass the value as a parameter"}

// errSCSChanging refuses a statement on a configured table that PostgreSQL
// may read after standard_conforming_strings changed and before it
// reported the new value.
var errSCSChanging = &pgError{code: codeFeatureNotSupported,
	msg:  "pgveil: standard_conforming_strings may have changed before this statement runs (a SET, RESET, set_config, DISCARD, DO or transaction end PostgreSQL has not answered yet); pgveil reads string literals only as with it on, and this statement on an encrypted table holds a backslash",
	hint: "wait for the result of the statement that changes standard_conforming_strings before sending statements on encrypted tables, and keep it on"}

// scsState is what a Session knows of standard_conforming_strings.
type scsState struct {
	off atomic.Bool // the last value PostgreSQL reported is not "on"
	// rfqAt and idleAt are the numbers of the expect entries answered by
	// the last ReadyForQuery, and by the last one saying 'I'. [server
	// writes, client reads]
	rfqAt, idleAt atomic.Uint64
	// changeAt is the number of the expect entry of the last message
	// forwarded that may change the setting; 0 for none. [client]
	changeAt uint64
}

// What a statement text may do to standard_conforming_strings (scsEffect).
const (
	scsSets  uint8 = 1 << iota // may set it: SET, RESET, set_config, DISCARD, DO, U&"..."
	scsTxEnd                   // ends a transaction or rolls back to a savepoint, undoing a SET made in it
)

// noteParameterStatus records a ParameterStatus body PostgreSQL sent.
func (s *Session) noteParameterStatus(body []byte) {
	if off, ok := scsReport(body); ok {
		s.scs.off.Store(off)
	}
}

// scsReport reads a ParameterStatus body: ok when it reports
// standard_conforming_strings, off when the value is anything but "on".
func scsReport(body []byte) (off, ok bool) {
	name, rest, ok := cstringBytes(body)
	if !ok || string(name) != "standard_conforming_strings" {
		return false, false
	}
	val, _, _ := cstringBytes(rest)
	return string(val) != "on", true
}

// noteReadyForQuery records that the ReadyForQuery answering expect entry n
// arrived, with transaction status status. [server]
func (s *Session) noteReadyForQuery(n uint64, status byte) {
	s.scs.rfqAt.Store(n)
	if status == 'I' {
		s.scs.idleAt.Store(n)
	}
}

// scsPending reports whether a message that may change
// standard_conforming_strings was forwarded and its ReadyForQuery (which
// carries the report) has not arrived. [client]
func (s *Session) scsPending() bool {
	return s.scs.changeAt != 0 && s.scs.changeAt > s.scs.rfqAt.Load()
}

// scsUnsafe reports whether a statement text that may touch a configured
// table must be refused whatever it holds. [client]
func (s *Session) scsUnsafe() bool {
	return s.scsPending() || s.scs.off.Load()
}

// scsChanges reports whether a statement with effect eff may change
// standard_conforming_strings now: a transaction end only undoes a change
// made since the session was last idle outside a transaction. [client]
func (s *Session) scsChanges(eff uint8) bool {
	if eff&scsSets != 0 {
		return true
	}
	return eff&scsTxEnd != 0 && s.scs.changeAt != 0 && s.scs.changeAt > s.scs.idleAt.Load()
}

// markSCSChange records that the message just forwarded may change
// standard_conforming_strings. [client]
func (s *Session) markSCSChange() {
	s.scs.changeAt = s.q.lastPushed()
}

// scsRefusal returns the error refusing sql, or nil: sql holds a
// backslash and may touch a configured table while
// standard_conforming_strings is off or may have changed. [client]
func (s *Session) scsRefusal(snap *Snapshot, sql string) error {
	pending := s.scsPending() // before off: the report precedes its ReadyForQuery
	off := s.scs.off.Load()
	if !pending && !off {
		return nil
	}
	if strings.IndexByte(sql, '\\') < 0 || !snap.Rewriter.Rules().Mentions(sql) {
		return nil
	}
	if pending {
		return errSCSChanging
	}
	return errSCSOff
}

// scsEffect reads what sql may do to standard_conforming_strings from the
// raw text, not from tokens, so a spelling pgveil's lexer would read
// differently with the setting off is still seen: the names
// standard_conforming_strings and set_config anywhere (identifiers,
// strings, comments and bodies alike), U&"..." (which can spell any name),
// and the first word of each statement (after each ';', wherever it is).
// It runs on every statement pgveil forwards, so it looks only at the
// bytes '_', '&' and ';', which it finds with strings.IndexByte.
func scsEffect(sql string) uint8 {
	var eff uint8
	if anyByteAt(sql, '_', func(i int) bool {
		return wordBefore(sql, i, "standard") && hasPrefixFold(sql[i+1:], "conforming_strings") ||
			wordBefore(sql, i, "set") && hasPrefixFold(sql[i+1:], "config")
	}) || anyByteAt(sql, '&', func(i int) bool {
		return i > 0 && sql[i-1]|0x20 == 'u' && i+1 < len(sql) && sql[i+1] == '"'
	}) {
		eff |= scsSets
	}
	for rest := sql; ; {
		switch w := firstWord(rest); {
		case wordIs(w, "reset"), wordIs(w, "discard"), wordIs(w, "do"):
			eff |= scsSets
		case wordIs(w, "commit"), wordIs(w, "end"), wordIs(w, "rollback"), wordIs(w, "abort"), wordIs(w, "prepare"):
			eff |= scsTxEnd
		}
		j := strings.IndexByte(rest, ';')
		if j < 0 {
			return eff
		}
		rest = rest[j+1:]
	}
}

// anyByteAt reports whether f holds at some index of b in s.
func anyByteAt(s string, b byte, f func(i int) bool) bool {
	for i := strings.IndexByte(s, b); i >= 0; {
		if f(i) {
			return true
		}
		j := strings.IndexByte(s[i+1:], b)
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// firstWord returns the ASCII word s starts with after white space,
// comments and parentheses.
func firstWord(s string) string {
	i := 0
	for i < len(s) {
		switch c := s[i]; {
		case isSpace(c) || c == '(':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			depth := 0
			for i < len(s) {
				if s[i] == '/' && i+1 < len(s) && s[i+1] == '*' {
					depth, i = depth+1, i+2
				} else if s[i] == '*' && i+1 < len(s) && s[i+1] == '/' {
					depth, i = depth-1, i+2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		default:
			j := i
			for j < len(s) && (s[j]|0x20 >= 'a' && s[j]|0x20 <= 'z') {
				j++
			}
			if j < len(s) && isWordCont(s[j]) {
				return "" // part of a longer identifier (reset_at)
			}
			return s[i:j]
		}
	}
	return ""
}

// wordBefore reports whether the word ending right before s[i] is kw,
// ignoring case.
func wordBefore(s string, i int, kw string) bool {
	start := i - len(kw)
	return start >= 0 && wordIs(s[start:i], kw) && (start == 0 || !isWordCont(s[start-1]))
}

// hasPrefixFold reports whether s starts with the lower-case kw, ignoring
// case.
func hasPrefixFold(s, kw string) bool {
	return len(s) >= len(kw) && wordIs(s[:len(kw)], kw)
}

func isWordCont(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80 || c >= '0' && c <= '9' || c == '$'
}

// wordIs compares an ASCII word with a lower-case keyword, ignoring case.
func wordIs(w, kw string) bool {
	if len(w) != len(kw) {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != kw[i] {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
