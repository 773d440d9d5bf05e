// Command report turns the records of bench/peers/run.sh into the results
// file (JSON), a chart (PNG, drawn by gnuplot) and BENCHMARKS.md.
//
//	report -results results.jsonl -machine machine.json \
//	    -json bench/peers/results/DATE.json -chart bench/peers/results/chart.png -md BENCHMARKS.md
//
// Each line of -results is {"contender","variant","workload","result"}, where
// result is what timeit, blast or the script printed. The analysis of the
// misses is not computed: it is read from bench/peers/NOTES.md (-notes) and
// copied into BENCHMARKS.md as it is.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Record is one measurement.
type Record struct {
	Contender string  `json:"contender"`
	Variant   string  `json:"variant"`
	Workload  string  `json:"workload"`
	Result    *Figure `json:"result"`
}

// Figure holds the fields any of the measuring programs print; each
// workload uses some of them.
type Figure struct {
	Runs        int      `json:"runs,omitempty"`
	Concurrency int      `json:"concurrency,omitempty"`
	Failures    int      `json:"failures,omitempty"`
	Failed      bool     `json:"failed,omitempty"`
	TimedOut    bool     `json:"timed_out,omitempty"`
	WallS       float64  `json:"wall_s,omitempty"`
	PerSecond   float64  `json:"per_second,omitempty"`
	MedianMS    float64  `json:"median_ms,omitempty"`
	P90MS       float64  `json:"p90_ms,omitempty"`
	MeanMS      float64  `json:"mean_ms,omitempty"`
	MinMS       float64  `json:"min_ms,omitempty"`
	MaxMS       float64  `json:"max_ms,omitempty"`
	DoneS       float64  `json:"done_s,omitempty"`
	MaxRSSKB    int64    `json:"max_rss_kb,omitempty"`
	Messages    int      `json:"messages,omitempty"`
	Connections int      `json:"connections,omitempty"`
	Seconds     float64  `json:"seconds,omitempty"`
	SinkSeconds *float64 `json:"sink_seconds,omitempty"`
	EnqueueKB   *int64   `json:"enqueue_kb,omitempty"`
	FlushKB     *int64   `json:"flush_kb,omitempty"`
	FlushProc   string   `json:"flush_process,omitempty"`
}

// Row is one contender's line in the table; zero means not measured.
type Row struct {
	Name       string  `json:"name"`
	Key        string  `json:"key"`
	MedianMS   float64 `json:"enqueue_median_ms,omitempty"`
	P90MS      float64 `json:"enqueue_p90_ms,omitempty"`
	ConcPerSec float64 `json:"callers_per_s,omitempty"`
	FlushRate  float64 `json:"flush_per_s,omitempty"`
	EnqueueKB  int64   `json:"rss_enqueue_kb,omitempty"`
	FlushKB    int64   `json:"rss_flush_kb,omitempty"`
	Note       string  `json:"note,omitempty"`
	// Reference figures measured by others on this kind of machine.
	RefMedianMS float64 `json:"ref_enqueue_median_ms,omitempty"`
	RefConc     float64 `json:"ref_callers_per_s,omitempty"`
	RefFlush    float64 `json:"ref_flush_per_s,omitempty"`
}

// Target is one goal of the issue and whether it is met.
type Target struct {
	What   string  `json:"what"`
	Want   string  `json:"want"`
	Got    string  `json:"got"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`
	Absent bool    `json:"absent,omitempty"`
}

func main() {
	var (
		resultsPath = flag.String("results", "", "results.jsonl from run.sh")
		machinePath = flag.String("machine", "", "machine.json from run.sh")
		jsonOut     = flag.String("json", "", "results file to write")
		chartOut    = flag.String("chart", "", "PNG to write")
		mdOut       = flag.String("md", "", "BENCHMARKS.md to write")
		notesPath   = flag.String("notes", "bench/peers/NOTES.md", "hand-written analysis copied into the Markdown")
	)
	flag.Parse()
	recs, err := readRecords(*resultsPath)
	check(err)
	machineRaw, err := os.ReadFile(*machinePath)
	check(err)
	var machine map[string]any
	check(json.Unmarshal(machineRaw, &machine))

	rows := buildRows(recs)
	headline := headlinePostie(rows)
	targets := buildTargets(recs, rows, headline)
	scale := scaleFigures(recs)

	out := map[string]any{
		"machine": machine, "rows": rows, "headline_postie": headline.Key,
		"targets": targets, "scale": scale, "records": recs,
	}
	b, err := json.MarshalIndent(out, "", "  ")
	check(err)
	check(os.WriteFile(*jsonOut, append(b, '\n'), 0o644))
	if *chartOut != "" {
		if err := chart(rows, *chartOut); err != nil {
			fmt.Fprintf(os.Stderr, "report: chart: %v\n", err)
		}
	}
	notes, _ := os.ReadFile(*notesPath)
	var failed []string
	for _, r := range recs {
		if r.Workload == "failed" {
			failed = append(failed, r.Contender)
		}
	}
	md := markdown(machine, rows, headline, targets, scale, failed, *jsonOut, *chartOut, *mdOut, string(notes))
	check(os.WriteFile(*mdOut, []byte(md), 0o644))
}

func readRecords(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("%s: %v: %s", path, err, line)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}

// find returns the last matching record: a later run merged into the same
// file (run.sh MERGE=) replaces an earlier figure.
func find(recs []Record, contender, variant, workload string) *Figure {
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if r.Contender == contender && (variant == "*" || r.Variant == variant) && r.Workload == workload && r.Result != nil {
			return r.Result
		}
	}
	return nil
}

// flushRate is messages per second from the start of the flush command
// to the sink's last message; 0 when the flush failed.
func flushRate(f *Figure) float64 {
	switch {
	case f == nil || f.Failed || f.TimedOut || f.Failures > 0:
		return 0
	case f.PerSecond > 0 && f.Seconds > 0: // blast
		return f.PerSecond
	case f.DoneS > 0 && f.Messages > 0:
		return float64(f.Messages) / f.DoneS
	}
	return 0
}

// contender describes one row: which records it draws on.
type contender struct {
	name, key, contender, flushVariant, concVariant, note string
	refMedian, refConc, refFlush                          float64
}

var contenders = []contender{
	{name: "Postie, connections = 4", key: "postie4", contender: "postie", flushVariant: "conns=4", concVariant: "conns=4"},
	{name: "Postie, connections = 8", key: "postie8", contender: "postie", flushVariant: "conns=8", concVariant: "conns=8"},
	{name: "Postfix 3.7 (null client)", key: "postfix", contender: "postfix", flushVariant: "-", concVariant: "-", refMedian: 13.0, refConc: 110, refFlush: 218},
	{name: "Postfix 3.7, smtp_tls_connection_reuse", key: "postfix_reuse", contender: "postfix", flushVariant: "reuse", concVariant: "reuse", refMedian: 13.0, refConc: 110, refFlush: 384},
	{name: "dma 0.13", key: "dma", contender: "dma", flushVariant: "-", concVariant: "-", refMedian: 6.1, refConc: 320, refFlush: 245},
	{name: "nullmailer 2.2", key: "nullmailer", contender: "nullmailer", flushVariant: "-", concVariant: "-", refMedian: 7.3, refConc: 281, refFlush: 111},
	{name: "msmtp 1.8 (no queue: sends)", key: "msmtp", contender: "msmtp", flushVariant: "-", concVariant: "-", refMedian: 11.3, refConc: 183, refFlush: 86},
	{name: "postie-sink itself, 4 connections", key: "sink4", contender: "sink", flushVariant: "conns=4"},
	{name: "postie-sink itself, 8 connections", key: "sink8", contender: "sink", flushVariant: "conns=8", refFlush: 5500},
	{name: "/bin/true (process start floor)", key: "true", contender: "true", concVariant: "-"},
}

func buildRows(recs []Record) []Row {
	var rows []Row
	for _, c := range contenders {
		r := Row{Name: c.name, Key: c.key, RefMedianMS: c.refMedian, RefConc: c.refConc, RefFlush: c.refFlush}
		if f := find(recs, c.contender, "*", "enqueue"); f != nil && f.Failures == 0 {
			r.MedianMS, r.P90MS = f.MedianMS, f.P90MS
		}
		if c.concVariant != "" {
			if f := find(recs, c.contender, c.concVariant, "enqueue_conc"); f != nil && f.Failures == 0 {
				r.ConcPerSec = f.PerSecond
			}
		}
		if c.flushVariant != "" {
			r.FlushRate = flushRate(find(recs, c.contender, c.flushVariant, "flush"))
		}
		if f := find(recs, c.contender, "*", "memory"); f != nil {
			if f.EnqueueKB != nil {
				r.EnqueueKB = *f.EnqueueKB
			}
			if f.FlushKB != nil {
				r.FlushKB = *f.FlushKB
			}
			if f.FlushProc != "" {
				r.Note = "flush RSS: largest Postfix daemon (" + f.FlushProc + ")"
			}
		}
		if r == (Row{Name: c.name, Key: c.key, RefMedianMS: c.refMedian, RefConc: c.refConc, RefFlush: c.refFlush}) {
			continue
		}
		rows = append(rows, r)
	}
	return rows
}

func row(rows []Row, key string) Row {
	for _, r := range rows {
		if r.Key == key {
			return r
		}
	}
	return Row{Key: key}
}

// headlinePostie is the Postie configuration with the higher flush rate;
// its enqueue figures are the same (they do not depend on connections).
// Its callers figure is the first configuration's, measured as every
// peer's is, before any flush of its own: run.sh fills the queue for the
// second one untimed, since on a file system without a journal a sample
// taken right after Postie's flush of 10,000 messages pays for the inodes
// that flush freed (earlier runs timed both; their second sample was
// 15-18% lower).
func headlinePostie(rows []Row) Row {
	a, b := row(rows, "postie4"), row(rows, "postie8")
	h := a
	if b.FlushRate > a.FlushRate {
		h = b
	}
	h.ConcPerSec = a.ConcPerSec
	return h
}

func buildTargets(recs []Record, rows []Row, p Row) []Target {
	dma, pfr := row(rows, "dma"), row(rows, "postfix_reuse")
	sink := math.Max(row(rows, "sink4").FlushRate, row(rows, "sink8").FlushRate)
	var ts []Target
	add := func(what, want string, value float64, absent bool, met bool, got string) {
		if absent {
			got = "–"
		}
		ts = append(ts, Target{What: what, Want: want, Value: value, Absent: absent, Met: met && !absent, Got: got})
	}
	ratio := func(a, b float64) float64 {
		if a == 0 || b == 0 {
			return 0
		}
		return a / b
	}
	r := ratio(p.MedianMS, dma.MedianMS)
	add("enqueue median vs dma", "≤ 0.5×", r, r == 0, r <= 0.5, fmt.Sprintf("%.2f× (%.2f ms vs %.2f ms)", r, p.MedianMS, dma.MedianMS))
	r = ratio(p.ConcPerSec, dma.ConcPerSec)
	add("32 concurrent callers vs dma", "≥ 2×", r, r == 0, r >= 2, fmt.Sprintf("%.2f× (%.0f vs %.0f msg/s)", r, p.ConcPerSec, dma.ConcPerSec))
	r = ratio(p.FlushRate, pfr.FlushRate)
	add("flush vs Postfix with connection reuse", "≥ 4×", r, r == 0, r >= 4, fmt.Sprintf("%.2f× (%.0f vs %.0f msg/s)", r, p.FlushRate, pfr.FlushRate))
	r = ratio(p.FlushRate, sink)
	add("flush vs the sink's own rate", "≥ 0.5×", r, r == 0, r >= 0.5, fmt.Sprintf("%.2f× (%.0f vs %.0f msg/s)", r, p.FlushRate, sink))
	pm := row(rows, "postie4")
	add("peak RSS enqueueing the big message (DKIM on)", "≤ 16 MiB", float64(pm.EnqueueKB)/1024, pm.EnqueueKB == 0, pm.EnqueueKB <= 16*1024, fmt.Sprintf("%.1f MiB", float64(pm.EnqueueKB)/1024))
	add("peak RSS flushing the big message (DKIM on)", "≤ 24 MiB", float64(pm.FlushKB)/1024, pm.FlushKB == 0, pm.FlushKB <= 24*1024, fmt.Sprintf("%.1f MiB", float64(pm.FlushKB)/1024))
	for _, layout := range []string{"incoming", "queue"} {
		for _, w := range []string{"mailq", "mailq_json"} {
			f := find(recs, "postie", layout, w)
			v := 0.0
			if f != nil && f.Failures == 0 {
				v = f.MedianMS / 1000
			}
			name := strings.Replace(w, "_json", " --json", 1)
			add(fmt.Sprintf("`%s` over the scale queue (%s/)", name, layout), "< 2 s", v, v == 0, v < 2, fmt.Sprintf("%.2f s", v))
		}
	}
	return ts
}

// ScalePoint is one flush of the scale series.
type ScalePoint struct {
	Messages  int     `json:"messages"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

func scaleFigures(recs []Record) map[string]any {
	var pts []ScalePoint
	for _, r := range recs {
		if r.Contender == "postie" && r.Workload == "scale_flush" && r.Result != nil {
			if rate := flushRate(r.Result); rate > 0 {
				pts = append(pts, ScalePoint{Messages: r.Result.Messages, Seconds: r.Result.DoneS, PerSecond: rate})
			}
		}
	}
	listing := map[string]float64{}
	for _, r := range recs {
		if r.Contender == "postie" && (r.Workload == "mailq" || r.Workload == "mailq_json") && r.Result != nil {
			listing[r.Workload+"/"+r.Variant] = r.Result.MedianMS / 1000
		}
	}
	return map[string]any{"flush": pts, "listing_s": listing}
}

// --- chart ---------------------------------------------------------------

func chart(rows []Row, out string) error {
	dir, err := os.MkdirTemp("", "postie-chart")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var enq, rate bytes.Buffer
	for _, r := range rows {
		label := strings.NewReplacer(", connections = ", " c=", " (null client)", "", ", smtp_tls_connection_reuse", "+reuse",
			" (no queue: sends)", "", "postie-sink itself, ", "sink ", " connections", "c", " (process start floor)", "").Replace(r.Name)
		if r.MedianMS > 0 {
			fmt.Fprintf(&enq, "%q %.3f %.3f\n", label, r.MedianMS, r.P90MS)
		}
		if r.ConcPerSec > 0 || r.FlushRate > 0 {
			fmt.Fprintf(&rate, "%q %s %s\n", label, dash(r.ConcPerSec), dash(r.FlushRate))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "enqueue.dat"), enq.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "rate.dat"), rate.Bytes(), 0o644); err != nil {
		return err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1400,560 font "DejaVu Sans,10"
set output %q
set multiplot layout 1,2
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set xtics rotate by -35 scale 0
set key top left
set datafile missing "-"
set title "enqueue: one sendmail -t -i of a 4 KB message (lower is better)"
set ylabel "milliseconds"
set yrange [0:*]
plot "enqueue.dat" using 2:xtic(1) title "median" lc rgb "#3a7bd5", "" using 3 title "p90" lc rgb "#a0c4ff"
set title "messages per second, log scale (higher is better)"
set ylabel "messages / s"
set logscale y
set yrange [10:*]
plot "rate.dat" using 2:xtic(1) title "32 concurrent sendmail callers" lc rgb "#f4a259", "" using 3 title "flush of the queue to the sink" lc rgb "#2a9d8f"
unset multiplot
`, abs)
	cmd := exec.Command("gnuplot")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(script)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, msg)
	}
	return nil
}

func dash(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// --- markdown -------------------------------------------------------------

func markdown(machine map[string]any, rows []Row, p Row, targets []Target, scale map[string]any, failedPeers []string, jsonPath, chartPath, mdPath, notes string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	rel := func(p string) string {
		r, err := filepath.Rel(filepath.Dir(mdPath), p)
		if err != nil {
			return p
		}
		return r
	}
	counts, _ := machine["counts"].(map[string]any)
	n := func(k string) string { return fmt.Sprint(counts[k]) }

	w("# Benchmarks: Postie against Postfix, dma, nullmailer and msmtp\n\n")
	w("Generated by `bench/peers/run.sh` on %v; the raw figures are in [`%s`](%s). ", machine["date"], rel(jsonPath), rel(jsonPath))
	w("Every contender relays to the same loopback smarthost (`postie-sink`: STARTTLS, AUTH PLAIN) with the same 4 KB message; ")
	w("every client checks the sink's certificate except where noted.\n\n")
	w("Reproduce (as root, on a Debian 12 machine with Go; installs and purges each peer in turn, ~30 minutes):\n\n")
	w("```sh\nsudo bash bench/peers/run.sh\n```\n\n")
	w("## Machine\n\n")
	w("| | |\n| --- | --- |\n")
	w("| CPU | %v × %v |\n| memory | %v MiB |\n| kernel | %v |\n", machine["nproc"], machine["cpu"], machine["memory_mb"], machine["kernel"])
	if fs, ok := machine["fs"]; ok {
		w("| file system of the queues | %v |\n", fs)
	}
	w("| Go | %v |\n| Postie | %v |\n| load average (1, 5, 15 min) at start / end | %v / %v |\n| other test suites seen running during the measurements (2-second samples) | %v |\n\n",
		machine["go"], machine["postie"], machine["load_start"], machine["load_end"], orZero(machine["interference_samples"]))

	w("## Results\n\n")
	w("Enqueue: one `sendmail -t -i` of the 4 KB message with delivery deferred, %s runs in a row (median and p90, ms). ", n("seq_runs"))
	w("Callers: %s `sendmail -t -i` at once, messages per second over %s messages (msmtp: %s). ", n("concurrency"), n("flush_msgs"), n("msmtp_flush_msgs"))
	w("Flush: %s queued messages, messages per second from the start of the flush command until the sink has the last one ", n("flush_msgs"))
	w("(msmtp has no queue: %s runs of `msmtp -t`, %s at once). ", n("msmtp_flush_msgs"), n("concurrency"))
	w("Peak RSS: `/usr/bin/time -f %%M` (wait4's ru_maxrss of the command and the children it waits for) enqueueing and flushing a %s MB message; Postie signs it with DKIM (RSA 2048). ", n("big_mb"))
	w("In brackets: reference figures measured by others on this kind of machine.\n\n")
	w("| contender | enqueue median ms | enqueue p90 ms | %s callers msg/s | flush msg/s | peak RSS enqueue | peak RSS flush |\n", n("concurrency"))
	w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		w("| %s | %s | %s | %s | %s | %s | %s |\n", r.Name, withRef(r.MedianMS, r.RefMedianMS, "%.2f"), num(r.P90MS, "%.2f"),
			withRef(r.ConcPerSec, r.RefConc, "%.0f"), withRef(r.FlushRate, r.RefFlush, "%.0f"), mib(r.EnqueueKB), mib(r.FlushKB))
	}
	w("\n")
	for _, r := range rows {
		if r.Note != "" {
			w("- %s: %s.\n", r.Name, r.Note)
		}
	}
	if row(rows, "true").MedianMS > 0 {
		w("- `/bin/true` is the floor: fork, exec and wait of a process that does nothing, timed the same way (%.2f ms median; %.0f per second with %s at once).\n",
			row(rows, "true").MedianMS, row(rows, "true").ConcPerSec, n("concurrency"))
	}
	for _, rec := range failedPeers {
		w("- **%s could not be measured**: it did not deliver a test message to the sink (see the run's output).\n", rec)
	}
	w("\n## Ratios: Postie / peer\n\n")
	w("Postie here is the configuration with the faster flush: **%s**; its callers figure is the one measured before any flush (%.0f msg/s, the first configuration's). Enqueue time: below 1 is faster. Rates: above 1 is faster. Memory: below 1 is smaller (Postie signs with DKIM; the peers do not sign).\n\n", p.Name, p.ConcPerSec)
	w("| peer | enqueue median | callers | flush | RSS enqueue | RSS flush |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if strings.HasPrefix(r.Key, "postie") || r.Key == "true" || strings.HasPrefix(r.Key, "sink") {
			continue
		}
		w("| %s | %s | %s | %s | %s | %s |\n", r.Name, ratio(p.MedianMS, r.MedianMS), ratio(p.ConcPerSec, r.ConcPerSec),
			ratio(p.FlushRate, r.FlushRate), ratio(float64(row(rows, "postie4").EnqueueKB), float64(r.EnqueueKB)),
			ratio(float64(row(rows, "postie4").FlushKB), float64(r.FlushKB)))
	}
	sink := math.Max(row(rows, "sink4").FlushRate, row(rows, "sink8").FlushRate)
	if sink > 0 {
		w("| the sink's own rate | | | %s | | |\n", ratio(p.FlushRate, sink))
	}

	w("\n## Targets\n\n| target | wanted | measured | |\n| --- | --- | --- | --- |\n")
	for _, t := range targets {
		mark := "missed"
		switch {
		case t.Absent:
			mark = "not measured"
		case t.Met:
			mark = "met"
		}
		w("| %s | %s | %s | **%s** |\n", t.What, t.Want, t.Got, mark)
	}

	w("\n## Scale (Postie only)\n\n")
	if l, ok := scale["listing_s"].(map[string]float64); ok && len(l) > 0 {
		w("Listing %s queued 4 KB messages (median of 3 runs, page cache warm, output to /dev/null), as `sendmail` leaves them (`incoming/`) and after a flush that could not deliver them (`queue/`):\n\n", n("scale_msgs"))
		w("| | incoming/ | queue/ |\n| --- | ---: | ---: |\n")
		w("| `mailq` | %.2f s | %.2f s |\n| `mailq --json` | %.2f s | %.2f s |\n\n", l["mailq/incoming"], l["mailq/queue"], l["mailq_json/incoming"], l["mailq_json/queue"])
	}
	if pts, ok := scale["flush"].([]ScalePoint); ok && len(pts) > 0 {
		w("Flush (connections = 4) by queue size; the queue is filled by `bench/peers/fill` through `internal/spool`:\n\n")
		w("| messages | seconds | msg/s | ms per message |\n| ---: | ---: | ---: | ---: |\n")
		for _, s := range pts {
			w("| %d | %.2f | %.0f | %.3f |\n", s.Messages, s.Seconds, s.PerSecond, 1000*s.Seconds/float64(s.Messages))
		}
		w("\n")
	}
	if chartPath != "" {
		w("## Chart\n\n![enqueue and flush figures](%s)\n\n", rel(chartPath))
	}
	w("## How each contender is set up\n\n")
	w("- **Postie**: `bin/sendmail -C postie.toml -t -i` as root (single-user spool on ext4), `[queue] deliver = \"queue\"`, flush with `bin/mailq -q`; `[smarthost] tls = \"starttls\"`, `ca_file` = the sink's certificate, `password_file`; `[log] target = \"stderr\"`.\n")
	w("- **Postfix** (Debian, debconf \"No configuration\", main.cf written by the script): null client, `relayhost = [localhost]:PORT`, `smtp_host_lookup = native`, `smtp_tls_security_level = secure` with `smtp_tls_CAfile` (the sink's certificate names localhost; Postfix does not match IP addresses), `smtp_sasl_auth_enable`, `static:` password map, `inet_interfaces = loopback-only`, `mydestination =`, `local_transport = error`, chroot off, `maillog_file`. Enqueue with `defer_transports = smtp`; flush: remove it, `postfix reload`, then time `postqueue -f`. Measured as set up and with `smtp_tls_connection_reuse = yes` (tlsproxy in master.cf). Its flush RSS is the largest VmHWM of its daemons, since `postqueue` delivers nothing itself.\n")
	w("- **dma**: `/etc/dma/dma.conf` with SMARTHOST, PORT, AUTHPATH, SECURETRANSFER, STARTTLS, DEFER; flush with `dma -q`, which forks a process per message and returns at once (its flush RSS is the largest among those processes: `timeit -reap` makes itself their subreaper). dma was given no CA file and still delivered to the sink, whose self-signed certificate is in no trust store: it does not verify the certificate.\n")
	w("- **nullmailer**: `/etc/nullmailer/remotes` with `--port= --starttls --user= --pass= --x509cafile=`; enqueue with `nullmailer-send` stopped; flush: start `nullmailer-send` (as user mail) and stop it when the sink has everything (its flush RSS: wait4 of nullmailer-send, which includes the smtp processes it reaped).\n")
	w("- **msmtp** (`msmtp-mta`): `~/.msmtprc` with `tls on`, `tls_starttls on`, `tls_trust_file`, `auth on`. It has no queue: its enqueue time is a whole delivery.\n")
	w("- **the sink's own rate**: `bench/peers/blast`, a go-smtp client over 4 or 8 parallel STARTTLS + AUTH connections, %s messages.\n", n("blast_msgs"))
	w("- The sink is restarted (same port and flags) before each flush because `-expect` counts from its start; its certificate is copied to the one path every contender trusts.\n")
	if machine["quickack"] == "1" {
		w("- The run sets `quickack 1` on the loopback route (and restores it after): with the kernel's delayed ACKs, clients that send two small segments in a row without TCP_NODELAY (msmtp, dma, nullmailer) wait 40 ms for an ACK under Nagle's rule, about twice per message, against this sink (msmtp: ~100 ms a message instead of ~10 ms). Postie and blast set TCP_NODELAY. `QUICKACK=0` measures with the default.\n")
	}
	if strings.TrimSpace(notes) != "" {
		w("\n%s\n", strings.TrimSpace(notes))
	}
	return b.String()
}

func orZero(v any) any {
	if v == nil {
		return 0
	}
	return v
}

func num(v float64, f string) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf(f, v)
}

func withRef(v, ref float64, f string) string {
	s := num(v, f)
	if ref > 0 {
		s += fmt.Sprintf(" ["+f+"]", ref)
	}
	return s
}

func mib(kb int64) string {
	if kb == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
}
