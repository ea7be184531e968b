package backfill

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress shows how far a run over one table has got: a live bar with
// rate and ETA on a terminal, otherwise one line per batch in the
// runbook's format, "Progress: 150/150 users processed".
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	total int64
	done  int64
	bar   *progressbar.ProgressBar
}

// NewProgress starts progress for label (a table) of total rows. With
// terminal a bar is drawn on w.
func NewProgress(w io.Writer, label string, total int64, terminal bool) *Progress {
	p := &Progress{w: w, label: label, total: total}
	if terminal {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return p
}

// Set records rows already done before this run (resumed progress).
func (p *Progress) Set(done int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = done
	p.grow()
	if p.bar != nil {
		_ = p.bar.Set64(done)
	}
}

// grow keeps total at least done: rows inserted during the run.
func (p *Progress) grow() {
	if p.done > p.total {
		p.total = p.done
		if p.bar != nil {
			p.bar.ChangeMax64(p.total)
		}
	}
}

// Add records n more rows processed.
func (p *Progress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.grow()
	if p.bar != nil {
		_ = p.bar.Add64(n)
		return
	}
	fmt.Fprintf(p.w, "Progress: %d/%d %s processed\n", p.done, p.total, p.label)
}

// Logf prints a line without breaking the bar.
func (p *Progress) Logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.bar != nil {
		_ = p.bar.RenderBlank()
	}
}

// Finish ends the bar (a no-op for line output).
func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil && !p.bar.IsFinished() {
		_ = p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}

// Done is the number of rows processed so far.
func (p *Progress) Done() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
