// pprofcanon: a canonical, order-independent text dump of a profile, free of ids, for comparing
// two profiles that should be semantically identical (e.g. autopgo's merge and Go's).
//
//	pprofcanon FILE        dump (sorted lines) to stdout
//	pprofcanon -check FILE print "ok" or the profile.Parse error (exit 1)
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

func mapping(m *profile.Mapping) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%#x/%#x/%#x %q %q fn=%t fl=%t ln=%t in=%t", m.Start, m.Limit, m.Offset,
		m.File, m.BuildID, m.HasFunctions, m.HasFilenames, m.HasLineNumbers, m.HasInlineFrames)
}

func function(f *profile.Function) string {
	if f == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%q %q %q s=%d", f.Name, f.SystemName, f.Filename, f.StartLine)
}

func location(l *profile.Location) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%#x m=[%s] folded=%t", l.Address, mapping(l.Mapping), l.IsFolded)
	for _, ln := range l.Line {
		fmt.Fprintf(&b, " {%s:%d}", function(ln.Function), ln.Line)
	}
	return b.String()
}

func sample(s *profile.Sample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v", s.Value)
	for _, l := range s.Location {
		fmt.Fprintf(&b, " <%s>", location(l))
	}
	var keys []string
	for k := range s.Label {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " L%q=%q", k, s.Label[k])
	}
	keys = keys[:0]
	for k := range s.NumLabel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " N%q=%v%q", k, s.NumLabel[k], s.NumUnit[k])
	}
	return b.String()
}

func main() {
	check := flag.Bool("check", false, "only parse")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: pprofcanon [-check] FILE")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	p, err := profile.Parse(f)
	f.Close()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	if *check {
		fmt.Println("ok")
		return
	}
	var st []string
	for _, t := range p.SampleType {
		st = append(st, t.Type+"/"+t.Unit)
	}
	fmt.Printf("header sample_types=%q default=%q period_type=%s/%s period=%d time=%d duration=%d\n",
		st, p.DefaultSampleType, p.PeriodType.Type, p.PeriodType.Unit, p.Period, p.TimeNanos,
		p.DurationNanos)
	fmt.Printf("header drop=%q keep=%q comments=%q\n", p.DropFrames, p.KeepFrames, p.Comments)
	fmt.Printf("header counts samples=%d locations=%d functions=%d mappings=%d\n",
		len(p.Sample), len(p.Location), len(p.Function), len(p.Mapping))
	if len(p.Mapping) > 0 {
		fmt.Printf("first-mapping %s\n", mapping(p.Mapping[0]))
	}
	var lines []string
	for _, m := range p.Mapping {
		lines = append(lines, "mapping "+mapping(m))
	}
	for _, fn := range p.Function {
		lines = append(lines, "function "+function(fn))
	}
	for _, l := range p.Location {
		lines = append(lines, "location "+location(l))
	}
	for _, s := range p.Sample {
		lines = append(lines, "sample "+sample(s))
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
}
