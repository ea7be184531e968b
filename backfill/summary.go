package backfill

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Write prints the summary for people. It names primary keys, never values.
func (s *Summary) Write(w io.Writer) {
	verb := s.Op.verb()
	if s.DryRun {
		fmt.Fprintf(w, "dry run of %s: nothing was changed\n", s.Op)
	}
	for _, t := range s.Tables {
		if t.Skipped {
			fmt.Fprintf(w, "%s: skipped, %s by an earlier run at %s (%d rows); --resume=false goes over it again\n",
				t.Table, verb, t.FinishedAt.Format(time.RFC3339), t.Rows)
			continue
		}
		rate := float64(t.Rows) / max(t.Duration.Seconds(), 1e-9)
		fmt.Fprintf(w, "%s: %d rows examined", t.Table, t.Rows)
		if s.DryRun {
			fmt.Fprintf(w, ", %d would be written", t.Written)
		} else {
			fmt.Fprintf(w, ", %d written", t.Written)
		}
		fmt.Fprintf(w, ", %d failed in %s (%.0f rows/s)", t.Failed, t.Duration.Round(time.Millisecond), rate)
		if s.Shard.Count > 1 {
			fmt.Fprintf(w, ", shard %s", s.Shard)
		}
		if t.Resumed {
			fmt.Fprint(w, ", resumed")
		}
		if t.Retries > 0 {
			fmt.Fprintf(w, ", %d rows read again after concurrent changes", t.Retries)
		}
		fmt.Fprintln(w)
		for _, c := range t.Columns {
			would := ""
			if s.DryRun {
				would = "would be "
			}
			fmt.Fprintf(w, "  %s.%s: %d values %s%s", t.Table, c.Column, c.Values, would, verb)
			if c.BlindIndex != "" {
				fmt.Fprintf(w, ", %d blind indexes %s%s", c.Hashes, would, hashVerb(s.Op))
			}
			if c.Failed > 0 {
				fmt.Fprintf(w, ", %d failed", c.Failed)
			}
			if len(c.Samples) > 0 {
				fmt.Fprintf(w, " (e.g. rows %s)", strings.Join(c.Samples, ", "))
			}
			fmt.Fprintln(w)
		}
		if t.Failed > 0 {
			reasons := make([]string, 0, len(t.Failures))
			for r, n := range t.Failures {
				reasons = append(reasons, fmt.Sprintf("%d %s", n, r))
			}
			sort.Strings(reasons)
			fmt.Fprintf(w, "  failed values: %s (e.g. rows %s); pgveil verify lists them\n", strings.Join(reasons, ", "), strings.Join(t.FailedKeys, ", "))
		}
		for _, d := range t.Duplicates {
			others := "another row"
			if len(d.Others) > 0 {
				others = "row " + strings.Join(d.Others, ", row ")
			}
			fmt.Fprintf(w, "  duplicate: row %s of %s holds the same %s as %s (unique index %s); left as it was\n", d.Row, t.Table, d.Column, others, d.Index)
		}
		if n := t.Failures[reasonDuplicate]; n > int64(len(t.Duplicates)) {
			fmt.Fprintf(w, "  ... and %d more duplicate rows\n", n-int64(len(t.Duplicates)))
		}
		if fixes := failureFixes(t.Failures); t.Failed > 0 && len(fixes) > 0 {
			fmt.Fprintf(w, "  fix: %s; then run the same command again\n", strings.Join(fixes, "; "))
		}
	}
}

func hashVerb(op Op) string {
	if op == OpDecrypt {
		return "cleared"
	}
	return "written"
}
