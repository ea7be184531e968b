package backfill

import (
	"context"
	"sync"
	"time"
)

// limiter paces rows to a rate (rows per second) shared by all workers: a
// token bucket holding up to one second of rows.
type limiter struct {
	rate float64
	mu   sync.Mutex
	// next is when the bucket is empty again: each wait of n rows moves it
	// n/rate seconds later and sleeps until it is at most one second ahead.
	next time.Time
	now  func() time.Time
}

func newLimiter(rate float64) *limiter {
	return &limiter{rate: rate, now: time.Now}
}

// reserve books n rows and returns how long to wait before using them.
func (l *limiter) reserve(n int) time.Duration {
	if l == nil || l.rate <= 0 || n <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.next.Before(now.Add(-time.Second)) {
		l.next = now.Add(-time.Second) // at most one second of burst
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	return l.next.Sub(now)
}

// wait blocks until n more rows are allowed.
func (l *limiter) wait(ctx context.Context, n int) error {
	d := l.reserve(n)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
