//go:build !linux

package proxy

import "net"

// The event-loop engine needs epoll; elsewhere every session runs on its
// two goroutines.
type poller struct{}

type evState struct{}

func (srv *Server) poller() *poller { return nil }

func (s *Session) runEvented(*poller) (chan struct{}, bool) { return nil, false }

func (s *Session) endEvented() {}

func (s *Session) keptEventedUpstream() (net.Conn, bool, bool) { return nil, false, false }

// connIdle cannot look at the socket here; the first read will tell.
func connIdle(net.Conn) bool { return true }
