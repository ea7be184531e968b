package rewrite

import "testing"

const benchSQL = `SELECT "users"."id", "users"."email", "users"."full_name" FROM "users" WHERE "users"."email" = 'alice@example.com' AND "users"."deleted_at" IS NULL ORDER BY "users"."id" LIMIT 21`

func BenchmarkPlanHit(b *testing.B) {
	rw := New(mustRules(b, Options{}), 1024)
	if _, _, _, err := rw.Plan(benchSQL); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, res, _ := rw.Plan(benchSQL); res != CacheHit {
			b.Fatal("miss")
		}
	}
}

// BenchmarkPlanHitScratch is the proxy's path: scratch memory per session.
func BenchmarkPlanHitScratch(b *testing.B) {
	rw := New(mustRules(b, Options{}), 1024)
	var sc Scratch
	if _, _, _, err := rw.PlanScratch(benchSQL, &sc); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, res, _ := rw.PlanScratch(benchSQL, &sc); res != CacheHit {
			b.Fatal("miss")
		}
	}
}

func BenchmarkPlanHitParallel(b *testing.B) {
	rw := New(mustRules(b, Options{}), 1024)
	rw.Plan(benchSQL)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rw.Plan(benchSQL)
		}
	})
}

func BenchmarkPlanSkip(b *testing.B) {
	rw := New(mustRules(b, Options{}), 1024)
	sql := `SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > $1 ORDER BY o.id LIMIT 50`
	b.ReportAllocs()
	for b.Loop() {
		if _, _, res, _ := rw.Plan(sql); res != CacheSkip {
			b.Fatal("not skipped")
		}
	}
}

func BenchmarkPlanMiss(b *testing.B) {
	r := mustRules(b, Options{})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Analyze(benchSQL); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Normalize(benchSQL)
	}
}

func BenchmarkRender(b *testing.B) {
	rw := New(mustRules(b, Options{}), 1024)
	p, lits, _, _ := rw.Plan(benchSQL)
	tok := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = p.Render(buf[:0], benchSQL, lits, func(Action, []byte) ([]byte, error) { return tok, nil })
	}
}

// BenchmarkPlanMemo: the session's statement repeated with other
// constants inlined, as simple-protocol clients send it.
func BenchmarkPlanMemo(b *testing.B) {
	rw := New(mustRules(b, Options{}), 1024)
	var sc Scratch
	sqls := []string{
		`SELECT email, full_name, phone FROM users WHERE email = 'u4242@example.com'`,
		`SELECT email, full_name, phone FROM users WHERE email = 'u17@example.com'`,
	}
	if _, _, _, err := rw.PlanScratch(sqls[0], &sc); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, res, _ := rw.PlanScratch(sqls[i%2], &sc); res != CacheHit {
			b.Fatal("miss")
		}
	}
}
