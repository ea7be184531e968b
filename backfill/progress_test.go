package backfill

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, "users", 150, false)
	p.Add(100)
	p.Add(50)
	p.Finish()
	want := "Progress: 100/150 users processed\nProgress: 150/150 users processed\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
	// Rows inserted during the run grow the total.
	b.Reset()
	p = NewProgress(&b, "users", 10, false)
	p.Set(5)
	p.Add(10)
	if !strings.Contains(b.String(), "Progress: 15/15 users processed") || p.Done() != 15 {
		t.Fatalf("%q", b.String())
	}
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, "users", 1000, true)
	p.Set(100)
	p.Add(400)
	p.Logf("batch %d", 1)
	p.Add(500)
	p.Finish()
	out := b.String()
	if !strings.Contains(out, "users") || !strings.Contains(out, "1000/1000") || !strings.Contains(out, "batch 1") {
		t.Fatalf("bar output: %q", out)
	}
	if strings.Contains(out, "Progress:") {
		t.Fatal("line output on a terminal")
	}
}
