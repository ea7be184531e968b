package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Protocol codes of the untyped startup packets.
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	protocolV3        = 196608
	protocolV32       = 196610
)

// errPlaintextAfterSSLRequest: bytes that arrived after SSLRequest and
// before the handshake could be injected by a man in the middle
// (CVE-2021-23214 in PostgreSQL); they are refused.
var errPlaintextAfterSSLRequest = errors.New("pgveil: unencrypted data received after SSLRequest")

// startup runs the sequential phase of a session: SSL/GSS negotiation,
// StartupMessage, the upstream connection, the authentication relay, and
// the catalog load. It returns with both sides ready for the loops, or an
// error already reported to the client where the protocol allows.
func (s *Session) startup(ctx context.Context) error {
	snap := s.srv.snap.Load()
	s.snap = snap
	deadline := time.Now().Add(snap.Config.Proxy.StartupTimeout.D())
	_ = s.client.SetDeadline(deadline)

	br := bufio.NewReaderSize(s.client, 1024)
	var startup []byte
	for {
		pkt, err := readStartupPacket(br)
		if err != nil {
			return err
		}
		code := binary.BigEndian.Uint32(pkt)
		switch code {
		case codeSSLRequest:
			if br.Buffered() > 0 {
				return errPlaintextAfterSSLRequest
			}
			if snap.clientTLS == nil || s.tlsDone {
				if _, err := s.client.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if _, err := s.client.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(s.client, snap.clientTLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("pgveil: client TLS handshake: %w", err)
			}
			s.connMu.Lock()
			s.client, s.tlsDone = tc, true
			s.connMu.Unlock()
			br = bufio.NewReaderSize(s.client, 1024)
		case codeGSSENCRequest:
			if br.Buffered() > 0 {
				return errPlaintextAfterSSLRequest
			}
			if _, err := s.client.Write([]byte{'N'}); err != nil {
				return err
			}
		case codeCancelRequest:
			s.forwardCancel(ctx, pkt)
			return errCancelHandled
		case protocolV3, protocolV32:
			startup = pkt
		default:
			return s.refuseStartup(&pgError{code: codeProtocolViolation,
				msg: fmt.Sprintf("pgveil: unsupported frontend protocol %d.%d", code>>16, code&0xffff)})
		}
		if startup != nil {
			break
		}
	}
	if br.Buffered() > 0 {
		// A client may pipeline its first messages; keep what was read.
		s.clientPrefix, _ = br.Peek(br.Buffered())
		s.clientPrefix = append([]byte(nil), s.clientPrefix...)
	}

	var sm pgproto3.StartupMessage
	if err := sm.Decode(startup); err != nil {
		return s.refuseStartup(&pgError{code: codeProtocolViolation, msg: "pgveil: invalid startup message"})
	}
	if v, ok := sm.Parameters["replication"]; ok && v != "false" && v != "0" && v != "off" && v != "no" {
		return s.refuseStartup(&pgError{code: codeFeatureNotSupported,
			msg:  "pgveil: replication connections are not supported through pgveil",
			hint: "connect replication clients to PostgreSQL directly"})
	}
	if s.srv.draining.Load() {
		s.srv.Metrics.ConnRefused(ResultRefusedDraining)
		return s.refuseStartup(&pgError{code: codeCannotConnectNow, msg: "pgveil: shutting down"})
	}
	if s.srv.maintenance.Load() {
		s.srv.Metrics.ConnRefused(ResultRefusedMaintenance)
		return s.refuseStartup(&pgError{code: codeCannotConnectNow, msg: "pgveil: maintenance mode: new connections are refused",
			hint: "try again when maintenance ends (MAINTENANCE_MODE)"})
	}
	s.database = sm.Parameters["database"]
	if s.database == "" {
		s.database = sm.Parameters["user"]
	}

	up, err := s.connectUpstream(ctx, snap, deadline)
	if err != nil {
		s.srv.Metrics.ConnRefused(ResultUpstreamFailed)
		s.log.Warn("upstream unreachable", "error", err.Error())
		return s.refuseStartup(&pgError{code: codeConnectionFailure, msg: "pgveil: upstream unreachable",
			hint: "check that PostgreSQL is running at the configured upstream address"})
	}
	s.connMu.Lock()
	s.upstream = up
	s.connMu.Unlock()
	if s.closing.Load() {
		up.Close()
		return net.ErrClosed
	}
	limit := snap.Config.Proxy.MaxMessageSize
	s.ur = newFrameReaderSize(up, limit, startupReadBufferSize)
	s.uw = bufio.NewWriterSize(up, eventWriteBufferSize)
	s.cr = newFrameReaderSize(&prefixedReader{prefix: s.clientPrefix, r: s.client}, limit, startupReadBufferSize)
	s.cw = bufio.NewWriterSize(s.client, eventWriteBufferSize)

	buf, err := sm.Encode(nil)
	if err != nil {
		return err
	}
	if _, err := s.uw.Write(buf); err != nil {
		return err
	}
	if err := s.uw.Flush(); err != nil {
		return err
	}
	if s.srv.snap.Load().Config.Proxy.IdleUpstreams() > 0 {
		s.poolKey = upstreamKey(&sm, snap)
	}
	if err := s.relayAuth(ctx, deadline, buf); err != nil {
		return err
	}
	_ = s.client.SetDeadline(time.Time{})
	_ = s.upstream.SetDeadline(time.Time{})
	return nil
}

var errCancelHandled = errors.New("cancel request handled")

// refuseStartup answers a startup-phase refusal with FATAL and returns it.
func (s *Session) refuseStartup(err error) error {
	buf, _ := errorResponse(err, true).Encode(nil)
	_, _ = s.client.Write(buf)
	return err
}

// connectUpstream dials PostgreSQL and negotiates TLS per upstream_tls.mode.
func (s *Session) connectUpstream(ctx context.Context, snap *Snapshot, deadline time.Time) (net.Conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := s.srv.dial(ctx, snap.Config.Upstream)
	if err != nil {
		s.srv.Metrics.UpstreamError(UpstreamConnect)
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = c.SetDeadline(deadline)
	if snap.upstreamTLS == nil {
		return c, nil
	}
	req := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f} // SSLRequest
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	var resp [1]byte
	if _, err := c.Read(resp[:]); err != nil {
		c.Close()
		return nil, err
	}
	switch resp[0] {
	case 'S':
		tc := tls.Client(c, snap.upstreamTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			s.srv.Metrics.UpstreamError(UpstreamTLS)
			c.Close()
			return nil, fmt.Errorf("upstream TLS handshake: %w", err)
		}
		return tc, nil
	case 'N':
		if snap.Config.UpstreamTLS.Mode == "prefer" {
			return c, nil
		}
		s.srv.Metrics.UpstreamError(UpstreamTLS)
		c.Close()
		return nil, errors.New("upstream does not support TLS but upstream_tls.mode requires it")
	default:
		s.srv.Metrics.UpstreamError(UpstreamProtocol)
		c.Close()
		return nil, errors.New("unexpected answer to SSLRequest from upstream")
	}
}

// relayAuth relays authentication between client and upstream until the
// upstream's ReadyForQuery, then loads the catalog and hands the client its
// ReadyForQuery. The server's offer of SCRAM-SHA-256-PLUS is removed:
// channel binding cannot cross a proxy that terminates TLS.
func (s *Session) relayAuth(ctx context.Context, deadline time.Time, startup []byte) error {
	// authOK: PostgreSQL accepted the client's credentials. asked: the
	// client answered an authentication request, so the login cannot be
	// replayed on another connection.
	authOK, asked, retries := false, false, 0
	for {
		typ, _, err := s.ur.next()
		if err != nil {
			return s.upstreamLost(err)
		}
		switch typ {
		case 'R':
			body, err := s.ur.body()
			if err != nil {
				return s.upstreamLost(err)
			}
			if len(body) < 4 {
				return s.upstreamLost(errBadFrameLength)
			}
			authType := binary.BigEndian.Uint32(body)
			switch authType {
			case 0: // AuthenticationOk
				authOK = true
				s.writeClientFrame('R', body)
				continue
			case 10: // SASL: list of mechanisms
				body = withoutSCRAMPlus(body)
				s.writeClientFrame('R', body)
			case 12: // SASLFinal: no response
				s.writeClientFrame('R', body)
				continue
			default: // cleartext (3), md5 (5), SASLContinue (11), GSS (7, 8)...
				s.writeClientFrame('R', body)
			}
			if err := s.cw.Flush(); err != nil {
				return err
			}
			// The client answers with one password-type message.
			ctyp, _, err := s.cr.next()
			if err != nil {
				return err
			}
			if ctyp != 'p' {
				return s.refuseStartup(&pgError{code: codeProtocolViolation, msg: "pgveil: expected a password message"})
			}
			asked = true
			if err := s.cr.forward(s.uw); err != nil {
				return err
			}
			if err := s.uw.Flush(); err != nil {
				return s.upstreamLost(err)
			}
		case 'K':
			body, err := s.ur.body()
			if err != nil {
				return s.upstreamLost(err)
			}
			if len(body) >= 8 {
				k := cancelKey{pid: binary.BigEndian.Uint32(body), secret: string(body[4:])}
				s.srv.registerCancel(s, k)
				s.connMu.Lock()
				s.upstreamCancel = k
				s.connMu.Unlock()
			}
			// The upstream's key is handed to the client unchanged: pgveil
			// has one upstream, so a CancelRequest carrying it is forwarded
			// there once pgveil has checked it belongs to a live session
			// (with the key of the connection that carries the session now,
			// which differs once it runs on a kept one: upstreams.go).
			s.writeClientFrame('K', body)
		case 'E':
			// Authentication failed: the client gets Postgres' own error.
			body, err := s.ur.body()
			if err != nil {
				return s.upstreamLost(err)
			}
			if errorCode(body) == codeTooManyConnections && s.poolKey != "" {
				// Kept backends count against max_connections and the
				// role's and database's CONNECTION LIMIT (upstreams.go).
				if authOK {
					// The credentials were accepted: a kept backend of
					// this login can carry the session.
					if u := s.srv.idle.take(s.poolKey, s.srv.Metrics); u != nil {
						return s.startOnKept(u, deadline)
					}
				}
				if s.srv.idle.closeOldest(s.srv.Metrics) && !asked && retries < 5 {
					// Nothing the client sent was used: log in again
					// once the closed backend has left its slot.
					retries++
					authOK = false
					time.Sleep(time.Duration(retries) * 20 * time.Millisecond)
					if err := s.reconnectForLogin(ctx, deadline, startup); err != nil {
						return err
					}
					continue
				}
			}
			s.writeClientFrame('E', body)
			_ = s.cw.Flush()
			return errAuthFailed
		case 'Z':
			body, err := s.ur.body()
			if err != nil {
				return s.upstreamLost(err)
			}
			// body is borrowed from the read buffer: copy it before the
			// catalog query reads more.
			frame := append([]byte{'Z', 0, 0, 0, 5}, body...)
			if len(frame) > 5 {
				s.txStatus.Store(uint32(frame[5]))
			}
			if len(frame) == 6 && frame[5] == 'I' {
				s.takeIdleUpstream(deadline)
			}
			if err := s.loadCatalog(); err != nil {
				return err
			}
			if _, err := s.cw.Write(frame); err != nil {
				return err
			}
			return s.cw.Flush()
		case 'S': // ParameterStatus: kept with the connection (startOnKept)
			body, err := s.ur.body()
			if err != nil {
				return s.upstreamLost(err)
			}
			s.startupParams = appendFrame(s.startupParams, 'S', body)
			s.noteParameterStatus(body)
			s.writeClientFrame('S', body)
		default: // NoticeResponse, NegotiateProtocolVersion
			if err := s.ur.forward(s.cw); err != nil {
				return err
			}
		}
	}
}

var errAuthFailed = errors.New("authentication failed upstream")

// errorCode returns the SQLSTATE of an ErrorResponse body.
func errorCode(body []byte) string {
	for len(body) > 1 && body[0] != 0 {
		field := body[0]
		v, rest, ok := cstring(body[1:])
		if !ok {
			return ""
		}
		if field == 'C' {
			return v
		}
		body = rest
	}
	return ""
}

// appendFrame appends a whole protocol frame to dst.
func appendFrame(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+4))
	return append(dst, body...)
}

// reconnectForLogin replaces the login connection PostgreSQL refused with a
// new one and sends the StartupMessage again. Only while the client has
// not answered an authentication request: what pgveil buffered for it so
// far (an AuthenticationOk) is dropped, the new connection says it again.
func (s *Session) reconnectForLogin(ctx context.Context, deadline time.Time, startup []byte) error {
	up, err := s.connectUpstream(ctx, s.snap, deadline)
	if err != nil {
		s.srv.Metrics.ConnRefused(ResultUpstreamFailed)
		return s.refuseStartup(&pgError{code: codeConnectionFailure, msg: "pgveil: upstream unreachable",
			hint: "check that PostgreSQL is running at the configured upstream address"})
	}
	s.connMu.Lock()
	old := s.upstream
	s.upstream = up
	s.connMu.Unlock()
	old.Close()
	s.cw.Reset(s.client)
	s.startupParams = s.startupParams[:0]
	s.ur = newFrameReaderSize(up, s.snap.Config.Proxy.MaxMessageSize, startupReadBufferSize)
	s.uw = bufio.NewWriterSize(up, eventWriteBufferSize)
	if _, err := s.uw.Write(startup); err != nil {
		return err
	}
	if err := s.uw.Flush(); err != nil {
		return s.upstreamLost(err)
	}
	return nil
}

func (s *Session) upstreamLost(err error) error {
	s.srv.Metrics.UpstreamError(UpstreamIO)
	_ = s.refuseStartup(&pgError{code: codeConnectionFailure, msg: "pgveil: upstream connection lost during startup"})
	return err
}

func (s *Session) writeClientFrame(typ byte, body []byte) {
	// The header is built in the writer's own free space (a local array
	// passed to Write would escape: one allocation per message).
	hdr := append(s.cw.AvailableBuffer(), typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
	_, _ = s.cw.Write(hdr)
	_, _ = s.cw.Write(body)
}

// forwardServerFrame writes to the client the server frame whose body a
// handler read and left unchanged: in one piece from the read buffer when
// it is whole there.
func (s *Session) forwardServerFrame(typ byte, body []byte) {
	if f := s.ur.frame(); f != nil {
		_, _ = s.cw.Write(f)
		return
	}
	s.writeClientFrame(typ, body)
}

// withoutSCRAMPlus removes SCRAM-SHA-256-PLUS from an AuthenticationSASL body.
func withoutSCRAMPlus(body []byte) []byte {
	out := append([]byte(nil), body[:4]...)
	rest := body[4:]
	for len(rest) > 0 {
		name, r, ok := cstring(rest)
		if !ok || name == "" {
			break
		}
		rest = r
		if strings.HasSuffix(name, "-PLUS") {
			continue
		}
		out = append(out, name...)
		out = append(out, 0)
	}
	return append(out, 0)
}

// loadCatalog runs the catalog query on the upstream connection, during
// startup, before the client is told it may send queries.
func (s *Session) loadCatalog() error {
	q := &pgproto3.Query{String: s.snap.catalogSQL}
	buf, _ := q.Encode(nil)
	if _, err := s.uw.Write(buf); err != nil {
		return err
	}
	if err := s.uw.Flush(); err != nil {
		return s.upstreamLost(err)
	}
	var rows [][][]byte
	failed := false
	for {
		typ, _, err := s.ur.next()
		if err != nil {
			return s.upstreamLost(err)
		}
		body, err := s.ur.body()
		if err != nil {
			return s.upstreamLost(err)
		}
		switch typ {
		case 'D':
			rows = append(rows, copyDataRow(body))
		case 'E':
			failed = true
		case 'S':
			// On a kept backend, the first statement after a reload of
			// the server's configuration.
			s.noteParameterStatus(body)
		case 'Z':
			if !failed {
				s.cat.Store(buildCatalog(s.snap.Config.Tables, rows, s.snap.Generation))
			} else {
				s.cat.Store(&catalog{generation: s.snap.Generation})
			}
			return nil
		}
	}
}

// copyDataRow decodes a DataRow into owned values.
func copyDataRow(body []byte) [][]byte {
	var dr pgproto3.DataRow
	if dr.Decode(body) != nil {
		return nil
	}
	out := make([][]byte, len(dr.Values))
	for i, v := range dr.Values {
		if v != nil {
			out[i] = append([]byte(nil), v...)
		}
	}
	return out
}

// forwardCancel relays a CancelRequest to the upstream when it names a live
// session; anything else is dropped silently, as PostgreSQL does.
func (s *Session) forwardCancel(ctx context.Context, pkt []byte) {
	if len(pkt) < 12 {
		return
	}
	k := cancelKey{pid: binary.BigEndian.Uint32(pkt[4:]), secret: string(pkt[8:])}
	target := s.srv.sessionForCancel(k)
	if target == nil {
		return
	}
	target.connMu.Lock()
	up := target.upstreamCancel
	target.connMu.Unlock()
	if up != k && up.secret != "" {
		// The session runs on a kept connection: cancel that one.
		pkt = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, codeCancelRequest), up.pid)
		pkt = append(pkt, up.secret...)
	}
	snap := s.srv.snap.Load()
	c, err := s.connectUpstream(ctx, snap, time.Now().Add(10*time.Second))
	if err != nil {
		return
	}
	defer c.Close()
	msg := make([]byte, 4+len(pkt))
	binary.BigEndian.PutUint32(msg, uint32(len(msg)))
	copy(msg[4:], pkt)
	_, _ = c.Write(msg)
	// Wait for the server to close, so the cancel is delivered before the
	// client's connection to pgveil ends.
	var b [1]byte
	_, _ = c.Read(b[:])
}

// prefixedReader replays bytes read ahead during startup.
type prefixedReader struct {
	prefix []byte
	r      interface{ Read([]byte) (int, error) }
}

func (p *prefixedReader) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.r.Read(b)
}

func randomUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}
