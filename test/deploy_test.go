package test

// Checks of the deployment kit (deploy/, Dockerfile): the Prometheus rules
// pass promtool and their unit tests, the Grafana dashboard and the alerts
// name only metrics pgveil exports, and the Kubernetes and Compose files are
// well-formed and wired the way the runbook says.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/proxy"
	"github.com/pgveil/pgveil/test/pgtest"
)

// kitRoot is the directory holding go.mod.
func kitRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("deploy test: go.mod not found above the working directory")
		}
		dir = parent
	}
}

func kitFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kitRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// promtool finds promtool; it is required except under -short.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/promtool"); serr == nil {
			return "/usr/bin/promtool"
		}
		if testing.Short() {
			t.Skip("promtool not installed (Debian package prometheus); skipped under -short")
		}
		t.Fatal("promtool not found: install the Debian package `prometheus` (apt-get install prometheus), which provides /usr/bin/promtool")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = kitRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	t.Parallel()
	runPromtool(t, "check", "rules", "deploy/prometheus/alerts.yaml")
}

func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	runPromtool(t, "test", "rules", "deploy/prometheus/alerts_test.yaml")
}

// exportedSeries is every series name pgveil can export: the families of
// proxy.NewMetrics and keyring.NewMetrics on a fresh registry, with the
// _bucket, _sum and _count series of histograms.
func exportedSeries(t *testing.T) (series map[string]bool, families map[string]dto.MetricType) {
	t.Helper()
	reg := prometheus.NewRegistry()
	pm := proxy.NewMetrics(reg)
	keyring.NewMetrics(reg)
	pm.InitKeys([]string{"0a1b2c3d"}) // pgveil_decryptions_total has no series before a key is known
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series = map[string]bool{}
	families = map[string]dto.MetricType{}
	for _, mf := range mfs {
		name := mf.GetName()
		families[name] = mf.GetType()
		series[name] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM || mf.GetType() == dto.MetricType_SUMMARY {
			series[name+"_sum"] = true
			series[name+"_count"] = true
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			series[name+"_bucket"] = true
		}
	}
	for _, want := range []string{
		"encryption_operations_total", "encryption_errors_total",
		"encryption_duration_seconds", "active_encryption_key_version",
		"pgveil_connections", "pgveil_queries_total", "pgveil_rejections_total",
		"pgveil_upstream_errors_total", "pgveil_plan_cache_lookups_total",
		"pgveil_proxy_overhead_seconds", "pgveil_decryptions_total",
	} {
		if _, ok := families[want]; !ok {
			t.Errorf("pgveil does not export %s (SPEC §7)", want)
		}
	}
	return series, families
}

var (
	promqlString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promqlRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	grafanaVar     = regexp.MustCompile(`\$\{?__[a-z_]+\}?`)
	promqlKeywords = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "and": true, "or": true, "unless": true, "offset": true,
		"bool": true, "inf": true, "Inf": true, "nan": true, "NaN": true, "atan2": true,
	}
)

// metricNames returns the metric names a PromQL expression selects: every
// identifier that is not a function or aggregation (followed by "("), a
// keyword, a label (inside {...} or a grouping clause), a duration or part
// of a number.
func metricNames(expr string) []string {
	s := grafanaVar.ReplaceAllString(expr, "5m")
	s = promqlString.ReplaceAllString(s, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRange.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		word := s[loc[0]:loc[1]]
		if loc[0] > 0 {
			if c := s[loc[0]-1]; c >= '0' && c <= '9' || c == '.' {
				continue // 1e-9, 5m
			}
		}
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promqlKeywords[word] {
			continue
		}
		names = append(names, word)
	}
	return names
}

func TestMetricNameExtraction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (operation, status) (rate(encryption_operations_total{job=~"$job", x="a{b}"}[$__rate_interval]))`, []string{"encryption_operations_total"}},
		{`histogram_quantile(0.95, sum by (le) (rate(a_bucket[5m]))) > 1e-3`, []string{"a_bucket"}},
		{`x > 2 * sum(rate(y[1h] offset 5m)) and on (instance) z unless w`, []string{"x", "y", "z", "w"}},
		{`sum(rate(a[5m])) by (le) / ignoring(kind) group_left b`, []string{"a", "b"}},
		{`max(up) == bool 1`, []string{"up"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

func loadDashboard(t *testing.T) (dashboard, []panel) {
	t.Helper()
	var d dashboard
	// The dashboard has many more fields than this test reads; decode
	// leniently, but require valid JSON with panels.
	if err := json.Unmarshal(kitFile(t, "deploy/grafana/pgveil.json"), &d); err != nil {
		t.Fatalf("deploy/grafana/pgveil.json: %v", err)
	}
	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return d, all
}

func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	series, families := exportedSeries(t)
	d, panels := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q uid %q: both must be set", d.Title, d.UID)
	}

	titles := map[string]bool{}
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be the $datasource variable of type prometheus", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q query %s names no metric: %s", p.Title, tg.RefID, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !series[n] {
					t.Errorf("panel %q query %s uses %s, which pgveil does not export", p.Title, tg.RefID, n)
				}
			}
		}
	}
	// The runbook's six panels.
	for _, want := range []string{"Encryption operations", "Encryption errors", "Encryption duration",
		"Response times", "Database time", "Active key version"} {
		if !titles[want] {
			t.Errorf("dashboard lacks the runbook panel %q", want)
		}
	}
	// Every family pgveil exports is on the dashboard somewhere.
	for fam, typ := range families {
		name := fam
		if typ == dto.MetricType_HISTOGRAM {
			name += "_bucket"
		}
		if !used[name] && !used[fam] && !used[fam+"_sum"] {
			t.Errorf("no panel shows %s", fam)
		}
	}
	// Template variables select only exported metrics too.
	labelValues := regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err2 := json.Unmarshal(v.Query, &s); err2 != nil {
				t.Fatalf("variable %s: query: %v", v.Name, err)
			}
			q.Query = s
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil || !series[m[1]] {
			t.Errorf("variable %s: query %q must be label_values over a pgveil metric", v.Name, q.Query)
		}
	}
}

// The dashboard's queries are valid PromQL: promtool parses them as the
// expressions of recording rules.
func TestGrafanaQueriesParse(t *testing.T) {
	t.Parallel()
	_, panels := loadDashboard(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, p := range panels {
		for _, tg := range p.Targets {
			expr := grafanaVar.ReplaceAllString(tg.Expr, "5m")
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel%d:%s", p.ID, strings.ToLower(tg.RefID)), Expr: expr})
		}
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard_rules.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", path)
}

type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertsUseExportedMetrics(t *testing.T) {
	t.Parallel()
	series, _ := exportedSeries(t)
	var ar alertRules
	if err := yaml.Unmarshal(kitFile(t, "deploy/prometheus/alerts.yaml"), &ar); err != nil {
		t.Fatal(err)
	}
	runbook := string(kitFile(t, "docs/RUNBOOK.md"))
	anchors := markdownAnchors(runbook)
	alerts := map[string]string{}
	for _, g := range ar.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = r.Expr
			names := metricNames(r.Expr)
			if len(names) == 0 {
				t.Errorf("alert %s names no metric", r.Alert)
			}
			for _, n := range names {
				if !series[n] {
					t.Errorf("alert %s uses %s, which pgveil does not export", r.Alert, n)
				}
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s has no severity label", r.Alert)
			}
			u := r.Annotations["runbook_url"]
			i := strings.Index(u, "docs/RUNBOOK.md#")
			if i < 0 {
				t.Errorf("alert %s: runbook_url %q does not point into docs/RUNBOOK.md", r.Alert, u)
				continue
			}
			if a := u[i+len("docs/RUNBOOK.md#"):]; !anchors[a] {
				t.Errorf("alert %s: docs/RUNBOOK.md has no heading with anchor #%s", r.Alert, a)
			}
		}
	}
	// The runbook's three alerts, on its metric names and thresholds.
	for name, want := range map[string][]string{
		"EncryptionErrorsHigh":    {"increase(encryption_errors_total[5m])", "> 10"},
		"DecryptionErrorsHigh":    {`encryption_operations_total{operation="decrypt",status="error"}`, "[5m]", "> 5"},
		"EncryptionLatencyHigh":   {"histogram_quantile(0.95", "encryption_duration_seconds_bucket", "> 1"},
		"PgveilUpstreamDown":      {"pgveil_upstream_errors_total"},
		"PgveilRejectionsSpiking": {"pgveil_rejections_total"},
	} {
		expr, ok := alerts[name]
		if !ok {
			t.Errorf("alerts.yaml lacks %s", name)
			continue
		}
		for _, w := range want {
			if !strings.Contains(expr, w) {
				t.Errorf("alert %s: expression %q does not contain %q", name, expr, w)
			}
		}
	}
}

// markdownAnchors returns the GitHub anchors of a Markdown file's headings.
func markdownAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	drop := regexp.MustCompile("[^a-z0-9 _-]")
	inFence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		h = drop.ReplaceAllString(strings.ToLower(h), "")
		anchors[strings.ReplaceAll(h, " ", "-")] = true
	}
	return anchors
}

// kitYAMLDocs decodes every document of a YAML file.
func kitYAMLDocs(t *testing.T, rel string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(kitFile(t, rel)))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// kitDig walks maps and lists: kitDig(doc, "spec", "template", 0).
func kitDig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func kitStr(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(kitRoot(t), "deploy", "kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes (%v)", err)
	}
	byKind := map[string][]map[string]any{}
	for _, f := range files {
		rel, _ := filepath.Rel(kitRoot(t), f)
		for _, d := range kitYAMLDocs(t, rel) {
			kind := kitStr(d["kind"])
			if kitStr(d["apiVersion"]) == "" || kind == "" {
				t.Errorf("%s: a document without apiVersion or kind", rel)
				continue
			}
			if kind != "Kustomization" && kitStr(kitDig(d, "metadata", "name")) == "" {
				t.Errorf("%s: %s without metadata.name", rel, kind)
			}
			byKind[kind] = append(byKind[kind], d)
		}
	}
	// kustomization.yaml lists files that exist.
	for _, k := range byKind["Kustomization"] {
		for _, r := range kitDig(k, "resources").([]any) {
			if _, err := os.Stat(filepath.Join(dir, kitStr(r))); err != nil {
				t.Errorf("kustomization.yaml: resource %s: %v", r, err)
			}
		}
	}

	secrets := map[string]map[string]any{}
	for _, s := range byKind["Secret"] {
		data, _ := kitDig(s, "stringData").(map[string]any)
		secrets[kitStr(kitDig(s, "metadata", "name"))] = data
	}
	configMaps := map[string]map[string]any{}
	for _, c := range byKind["ConfigMap"] {
		data, _ := kitDig(c, "data").(map[string]any)
		configMaps[kitStr(kitDig(c, "metadata", "name"))] = data
	}

	// checkPod checks a pgveil container: keys come from files of a mounted
	// Secret that holds those entries, the config from a ConfigMap that
	// config.Parse accepts.
	checkPod := func(where string, podSpec any, c map[string]any) {
		t.Helper()
		volumes := map[string]map[string]any{}
		for _, v := range kitDig(podSpec, "volumes").([]any) {
			volumes[kitStr(kitDig(v, "name"))] = v.(map[string]any)
		}
		mounts := map[string]string{} // mountPath -> volume name
		for _, m := range kitDig(c, "volumeMounts").([]any) {
			mounts[kitStr(kitDig(m, "mountPath"))] = kitStr(kitDig(m, "name"))
		}
		env := map[string]string{}
		for _, e := range kitDig(c, "env").([]any) {
			env[kitStr(kitDig(e, "name"))] = kitStr(kitDig(e, "value"))
		}
		for _, name := range []string{"ENCRYPTION_KEY_FILE", "ENCRYPTION_KEY_FALLBACK_FILE", "ENCRYPTION_HASH_KEY_FILE"} {
			path := env[name]
			if path == "" {
				t.Errorf("%s: %s not set", where, name)
				continue
			}
			vol := volumes[mounts[filepath.Dir(path)]]
			secretName := kitStr(kitDig(vol, "secret", "secretName"))
			data, ok := secrets[secretName]
			if !ok {
				t.Errorf("%s: %s=%s is not in a mounted Secret of secret.yaml", where, name, path)
				continue
			}
			if _, ok := data[filepath.Base(path)]; !ok {
				t.Errorf("%s: %s=%s: Secret %s has no entry %s", where, name, path, secretName, filepath.Base(path))
			}
		}
		args := kitDig(c, "args").([]any)
		var cfgPath string
		for i, a := range args {
			s := kitStr(a)
			if s == "--config" && i+1 < len(args) {
				cfgPath = kitStr(args[i+1])
			} else if v, ok := strings.CutPrefix(s, "--config="); ok {
				cfgPath = v
			}
		}
		vol := volumes[mounts[filepath.Dir(cfgPath)]]
		cmName := kitStr(kitDig(vol, "configMap", "name"))
		data, ok := configMaps[cmName]
		if !ok {
			t.Errorf("%s: --config %q is not in a mounted ConfigMap", where, cfgPath)
			return
		}
		yml := kitStr(data[filepath.Base(cfgPath)])
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok && v != "" }
		cfg, err := config.Parse([]byte(yml), cfgPath, lookup)
		if err != nil {
			t.Errorf("%s: ConfigMap %s: %v", where, cmName, err)
			return
		}
		if !strings.HasPrefix(cfg.Keys.EncryptionKey, "file:/var/run/secrets/") {
			t.Errorf("%s: encryption key source %q, want the mounted Secret file", where, cfg.Keys.EncryptionKey)
		}
	}

	// The app Deployment runs pgveil as a sidecar with probes on the admin port.
	var sawSidecar bool
	for _, d := range byKind["Deployment"] {
		spec := kitDig(d, "spec", "template", "spec")
		var all []any
		if l, ok := kitDig(spec, "initContainers").([]any); ok {
			all = append(all, l...)
		}
		all = append(all, kitDig(spec, "containers").([]any)...)
		for _, c := range all {
			c := c.(map[string]any)
			if !strings.Contains(kitStr(c["image"]), "pgveil") {
				continue
			}
			sawSidecar = true
			ports := map[string]string{}
			for _, p := range kitDig(c, "ports").([]any) {
				ports[kitStr(kitDig(p, "name"))] = kitStr(kitDig(p, "containerPort"))
			}
			for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
				if got := kitStr(kitDig(c, probe, "httpGet", "path")); got != path {
					t.Errorf("pgveil sidecar %s path %q, want %s", probe, got, path)
				}
				port := kitStr(kitDig(c, probe, "httpGet", "port"))
				if p, ok := ports[port]; ok {
					port = p
				}
				if port != "9187" {
					t.Errorf("pgveil sidecar %s port %s, want the admin port 9187", probe, port)
				}
			}
			if _, isInit := c["restartPolicy"]; isInit && kitStr(c["restartPolicy"]) != "Always" {
				t.Errorf("pgveil as an init container must have restartPolicy: Always (native sidecar)")
			}
			checkPod("Deployment "+kitStr(kitDig(d, "metadata", "name")), spec, c)
		}
		if kitStr(kitDig(spec, "terminationGracePeriodSeconds")) != "" {
			if g, _ := strconv.Atoi(kitStr(kitDig(spec, "terminationGracePeriodSeconds"))); g <= 30 {
				t.Errorf("terminationGracePeriodSeconds %d leaves no room for the 30s drain", g)
			}
		}
	}
	if !sawSidecar {
		t.Error("no Deployment runs a pgveil container")
	}

	// The backfill Job: Indexed, one shard per completion index.
	jobs := byKind["Job"]
	if len(jobs) == 0 {
		t.Fatal("no backfill Job")
	}
	known := map[string]bool{"--config": true, "--dsn": true, "--table": true, "--dry-run": true,
		"--batch-size": true, "--workers": true, "--max-rate": true, "--max-failures": true,
		"--verbose": true, "--shard": true}
	for _, j := range jobs {
		if kitStr(kitDig(j, "spec", "completionMode")) != "Indexed" {
			t.Errorf("Job %s: completionMode must be Indexed", kitStr(kitDig(j, "metadata", "name")))
		}
		completions := kitStr(kitDig(j, "spec", "completions"))
		spec := kitDig(j, "spec", "template", "spec")
		c := kitDig(spec, "containers", 0).(map[string]any)
		args := kitDig(c, "args").([]any)
		if len(args) == 0 || kitStr(args[0]) != "backfill" {
			t.Errorf("backfill Job runs %v, want pgveil backfill", args)
		}
		var shard string
		for _, a := range args[1:] {
			flag, val, _ := strings.Cut(kitStr(a), "=")
			if !known[flag] {
				t.Errorf("backfill Job: unknown flag %s", flag)
			}
			if flag == "--shard" {
				shard = val
			}
		}
		if want := "$(JOB_COMPLETION_INDEX)/" + completions; shard != want {
			t.Errorf("backfill Job: --shard %q, want %q (N = completions)", shard, want)
		}
		if p := kitStr(kitDig(j, "spec", "parallelism")); p != completions {
			t.Errorf("backfill Job: parallelism %s differs from completions %s", p, completions)
		}
		checkPod("Job", spec, c)
	}
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	root := kitRoot(t)
	docs := kitYAMLDocs(t, "deploy/compose/docker-compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yaml: %d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, s := range []string{"postgres", "pgveil", "demo"} {
		if services[s] == nil {
			t.Errorf("docker-compose.yaml lacks service %s", s)
		}
	}
	pg := services["pgveil"]
	if ctx := kitStr(kitDig(pg, "build", "context")); ctx != "../.." {
		t.Errorf("pgveil build context %q, want the repository root ../..", ctx)
	}
	hc := fmt.Sprint(kitDig(pg, "healthcheck", "test"))
	if !strings.Contains(hc, "/readyz") {
		t.Errorf("pgveil healthcheck %s should wait for /readyz", hc)
	}
	// Bind mounts name files and directories that exist.
	for name, s := range services {
		vols, _ := kitDig(s, "volumes").([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(kitStr(v), ":")
			if !strings.HasPrefix(src, ".") {
				continue // named volume
			}
			if _, err := os.Stat(filepath.Join(root, "deploy", "compose", src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
	// The config pgveil reads parses, with keys from the *_FILE variables.
	env := map[string]string{}
	for k, v := range kitDig(pg, "environment").(map[string]any) {
		env[k] = kitStr(v)
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := config.Load(filepath.Join(root, "deploy", "compose", "pgveil", "pgveil.yaml"), lookup)
	if err != nil {
		t.Fatalf("deploy/compose/pgveil/pgveil.yaml: %v", err)
	}
	if cfg.Keys.EncryptionKey != "file:/keys/encryption_key" || cfg.Keys.HashKey != "file:/keys/hash_key" {
		t.Errorf("compose keys %q, %q: want the files the keys service writes", cfg.Keys.EncryptionKey, cfg.Keys.HashKey)
	}
	for _, want := range []string{"users", "tasks", "chat_history"} {
		if !slices.ContainsFunc(cfg.Tables, func(tb config.Table) bool { return tb.Name == want }) {
			t.Errorf("compose config lacks table %s", want)
		}
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	df := string(kitFile(t, "Dockerfile"))
	for _, want := range []string{
		"CGO_ENABLED=1",
		"make build BIN=/out/pgveil",
		"EXPOSE 6432 9187",
		"/healthz",
		"HEALTHCHECK",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	var stages, user string
	for _, line := range strings.Split(df, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "FROM" {
			stages += f[1] + " "
		}
		if len(f) >= 2 && f[0] == "USER" {
			user = f[1]
		}
	}
	if strings.Count(stages, " ") < 2 {
		t.Errorf("Dockerfile is not multi-stage: FROM %s", stages)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("Dockerfile runs as %q, want a non-root USER", user)
	}
	// The image is built by `make build`, so the Makefile must have that
	// target building ./cmd/pgveil into $(BIN).
	mk := string(kitFile(t, "Makefile"))
	if !regexp.MustCompile(`(?m)^build:`).MatchString(mk) || !strings.Contains(mk, "-o $(BIN) ./cmd/pgveil") {
		t.Error("Makefile has no build target writing ./cmd/pgveil to $(BIN), which the Dockerfile runs")
	}
	di := strings.Fields(string(kitFile(t, ".dockerignore")))
	sort.Strings(di)
	for _, want := range []string{".git", ".demo"} {
		if !slices.Contains(di, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
}

// TestDeployDemoScripts runs the Compose demo's pieces without Docker, on the
// harness's PostgreSQL: the application schema of deploy/compose/initdb,
// keys made by `pgveil keygen`, `pgveil schema --apply`, pgveil serving
// deploy/compose/pgveil/pgveil.yaml with the Compose environment, the demo
// application's psql script (twice: it claims to be re-runnable), what
// PostgreSQL stores, and `pgveil verify`.
func TestDeployDemoScripts(t *testing.T) {
	t.Parallel()
	c := pgtest.Get(t)
	bin := pgtest.Pgveil(t)
	root := kitRoot(t)
	compose := filepath.Join(root, "deploy", "compose")
	db := c.NewDB(t)
	su := c.Superuser(t, db)
	ctx := ctxT(t)
	if _, err := su.Exec(ctx, string(kitFile(t, "deploy/compose/initdb/01-app-schema.sql"))); err != nil {
		t.Fatalf("initdb schema: %v", err)
	}
	if _, err := su.Exec(ctx, "GRANT ALL ON ALL TABLES IN SCHEMA public TO "+pgtest.AppRole+"; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "+pgtest.AppRole); err != nil {
		t.Fatal(err)
	}

	// The keys service: pgveil keygen into files, empty fallbacks.
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"encryption_key", "hash_key"} {
		out, err := exec.Command(bin, "keygen").Output()
		if err != nil {
			t.Fatalf("pgveil keygen: %v", err)
		}
		if err := os.WriteFile(filepath.Join(keyDir, k), out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"encryption_key_fallback", "hash_key_fallback"} {
		if err := os.WriteFile(filepath.Join(keyDir, k), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The Compose environment of pgveil, with /keys/ moved here and the
	// database URL pointing at the harness.
	services, _ := kitYAMLDocs(t, "deploy/compose/docker-compose.yaml")[0]["services"].(map[string]any)
	env := map[string]string{}
	for k, v := range kitDig(services, "pgveil", "environment").(map[string]any) {
		env[k] = strings.Replace(kitStr(v), "/keys/", keyDir+"/", 1)
	}
	env["DATABASE_URL"] = c.DSN(pgtest.SuperUser, db)
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	cfgText := string(kitFile(t, "deploy/compose/pgveil/pgveil.yaml"))
	if !strings.Contains(cfgText, "upstream: postgres:5432") {
		t.Fatal("deploy/compose/pgveil/pgveil.yaml: upstream is not postgres:5432")
	}
	cfgText = strings.Replace(cfgText, "upstream: postgres:5432", "upstream: "+c.Addr(), 1)
	cfgPath := filepath.Join(dir, "pgveil.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}

	// The schema service.
	if r := runTool(t, 2*time.Minute, dir, envList, "", bin, "schema", "--config", cfgPath, "--apply"); r.Err != nil {
		t.Fatalf("pgveil schema --apply: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
	}

	p := startPgveil(t, c, db, binOpts{yaml: cfgText, env: env, dir: t.TempDir()})

	// The demo service: the app through pgveil (SCRAM, as in Compose).
	psql := pgBinary(t, c, "psql")
	appDSN := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", pgtest.ScramUser, c.Password(pgtest.ScramUser), p.Addr, db)
	for run := 1; run <= 2; run++ {
		r := runTool(t, time.Minute, filepath.Join(compose, "demo"), nil, "", psql, "-X", "-f", "app.sql", "-d", appDSN)
		if r.Err != nil {
			t.Fatalf("run %d: psql -f app.sql through pgveil: %v\n%s\n%s", run, r.Err, r.Stdout, r.Stderr)
		}
		for _, want := range []string{"alice@example.com", "Alice Example", "Write the report", "Quarterly numbers for the board"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("run %d: app.sql output lacks %q:\n%s", run, want, r.Stdout)
			}
		}
		if !strings.Contains(r.Stderr, "0A000") || !strings.Contains(r.Stderr, "pgveil: ") {
			t.Errorf("run %d: the LIKE query was not refused with 0A000:\n%s", run, r.Stderr)
		}
		if strings.Count(r.Stderr, "ERROR") != 1 {
			t.Errorf("run %d: want exactly one error (the LIKE refusal):\n%s", run, r.Stderr)
		}
	}

	// What PostgreSQL stores: tokens and 64-character blind indexes only.
	r := runTool(t, time.Minute, filepath.Join(compose, "demo"), nil, "", psql,
		"-X", "--no-align", "--field-separator=|", "-t", "-f", "stored.sql", "-d", c.DSN(pgtest.SuperUser, db))
	if r.Err != nil {
		t.Fatalf("psql -f stored.sql: %v\n%s", r.Err, r.Stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	var users int
	for _, l := range lines {
		f := strings.Split(l, "|")
		if len(f) == 5 {
			users++
			if !strings.HasPrefix(f[1], "gAAAAA") || f[2] != "t" || f[3] != "64" || !strings.HasPrefix(f[4], "gAAAAA") {
				t.Errorf("stored users row not encrypted: %q", l)
			}
		}
		if strings.Contains(l, "example.com") || strings.Contains(l, "Example") || strings.Contains(l, "report") {
			t.Errorf("plaintext stored: %q", l)
		}
	}
	if users != 2 {
		t.Errorf("%d users stored, want 2 (alice, bob; the second run inserts nothing):\n%s", users, r.Stdout)
	}

	// Everything the demo wrote is a token under the primary key.
	if r := runTool(t, 2*time.Minute, dir, envList, "", bin, "verify", "--config", cfgPath); r.Err != nil {
		t.Errorf("pgveil verify after the demo: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
	}
}
