//go:build !linux

package proxy

// The event-loop engine needs epoll; elsewhere every session runs on its
// two goroutines.
type poller struct{}

type evState struct{}

func (srv *Server) poller() *poller { return nil }

func (s *Session) runEvented(*poller) (chan struct{}, bool) { return nil, false }

func (s *Session) endEvented() {}
