// pprofgen: deterministic synthetic profiles for the differential tests and the benchmark,
// written with github.com/google/pprof/profile. Profiles made with the same -universe share
// one "binary" (functions, locations, mappings, call paths), so merging several -seed values
// behaves like merging profiles of one service: most stacks repeat across inputs.
//
//	pprofgen -o OUT [-seed N] [-universe N] [-samples N] [-depth N] [-functions N] ...
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strings"

	"github.com/google/pprof/profile"
)

var (
	out         = flag.String("o", "", "output file")
	raw         = flag.Bool("raw", false, "write uncompressed protobuf")
	seed        = flag.Int64("seed", 1, "seed for the samples")
	universe    = flag.Int64("universe", 1, "seed for functions, locations, mappings and call paths")
	nFunctions  = flag.Int("functions", 2000, "functions")
	nLocations  = flag.Int("locations", 5000, "locations")
	nSamples    = flag.Int("samples", 5000, "samples")
	nPaths      = flag.Int("paths", 0, "distinct call paths (default: samples)")
	depth       = flag.Int("depth", 32, "maximum stack depth")
	nMappings   = flag.Int("mappings", 3, "mappings")
	inline      = flag.Float64("inline", 0.2, "fraction of locations with inlined frames")
	nLabels     = flag.Int("labels", 2, "string label keys")
	nNumLabels  = flag.Int("numlabels", 0, "numeric label keys")
	types       = flag.String("types", "samples/count,cpu/nanoseconds", "sample types")
	periodType  = flag.String("period-type", "cpu/nanoseconds", "period type")
	period      = flag.Int64("period", 10000000, "period")
	timeNanos   = flag.Int64("time", 1700000000000000000, "time_nanos (plus seed seconds)")
	duration    = flag.Int64("duration", 30000000000, "duration_nanos")
	zero        = flag.Float64("zero", 0, "fraction of samples with all values zero")
	negative    = flag.Float64("negative", 0, "fraction of samples with negated values")
	cxx         = flag.Bool("cxx", false, "C++-style names: arguments, (anonymous namespace), operator()")
	noStartLine = flag.Bool("nostartline", false, "leave Function.start_line unset")
	aslr        = flag.Bool("aslr", false, "shift mapping addresses by the seed")
	fake        = flag.Bool("fakemapping", false, "add a mapping with neither file nor build id")
	noMapping   = flag.Float64("nomapping", 0, "fraction of locations without a mapping")
	folded      = flag.Float64("folded", 0, "fraction of folded locations")
	comments    = flag.Int("comments", 0, "comments")
	dropFrames  = flag.String("drop-frames", "", "drop_frames")
	keepFrames  = flag.String("keep-frames", "", "keep_frames")
	defaultType = flag.String("default-type", "", "default_sample_type")
	emptyStacks = flag.Float64("emptystack", 0, "fraction of samples with no locations")
	unitless    = flag.Float64("unitless", 0.3, "fraction of numeric labels without a unit")
	sameIDs     = flag.Bool("sparse-ids", false, "use large, sparse ids")
	pathLabels  = flag.Bool("path-labels", false, "labels follow the call path (as pprof.Do labels do), with one of 3 tenants")
	labelled    = flag.Float64("labelled", 1, "fraction of samples that may carry labels (drawn from its own seed, so 1 changes nothing)")
)

var words = []string{"alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta",
	"lambda", "zeta", "http", "json", "sql", "cache", "queue", "worker", "parse", "encode",
	"decode", "compress", "hash", "sort", "index", "route", "handler", "server", "client"}

func funcName(r *rand.Rand, i int) string {
	pkg := fmt.Sprintf("github.com/acme/svc/%s%d", words[r.Intn(len(words))], i%37)
	w := words[r.Intn(len(words))]
	if *cxx {
		switch r.Intn(6) {
		case 0:
			return fmt.Sprintf("%s::%s%d(int, char const*)", strings.ReplaceAll(pkg, "/", "::"), w, i)
		case 1:
			return fmt.Sprintf("(anonymous namespace)::%s%d(std::string)", w, i)
		case 2:
			return fmt.Sprintf("acme::Lambda%d::operator()(long) const", i)
		case 3:
			return fmt.Sprintf(".%s_%d", w, i)
		case 4:
			return fmt.Sprintf("runtime.%s%d", w, i)
		}
	}
	switch r.Intn(5) {
	case 0:
		return fmt.Sprintf("%s.(*%s).%s%d", pkg, strings.Title(w), strings.Title(words[r.Intn(len(words))]), i)
	case 1:
		return fmt.Sprintf("runtime.%s%d", w, i)
	case 2:
		return fmt.Sprintf("%s.%s%d.func%d", pkg, w, i, 1+r.Intn(3))
	}
	return fmt.Sprintf("%s.%s%d", pkg, w, i)
}

func main() {
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: pprofgen -o OUT [flags]")
		os.Exit(2)
	}
	u := rand.New(rand.NewSource(*universe))
	r := rand.New(rand.NewSource(*seed * 7919))
	lr := rand.New(rand.NewSource(*seed*7919 + 1))
	idOf := func(i int) uint64 {
		if *sameIDs {
			return uint64(i)*1000003 + 17
		}
		return uint64(i + 1)
	}

	p := &profile.Profile{
		PeriodType:    &profile.ValueType{},
		Period:        *period,
		TimeNanos:     *timeNanos + *seed*1000000000,
		DurationNanos: *duration,
		DropFrames:    *dropFrames,
		KeepFrames:    *keepFrames,
	}
	if pt := strings.SplitN(*periodType, "/", 2); len(pt) == 2 {
		p.PeriodType = &profile.ValueType{Type: pt[0], Unit: pt[1]}
	}
	for _, t := range strings.Split(*types, ",") {
		tu := strings.SplitN(t, "/", 2)
		if len(tu) != 2 {
			fmt.Fprintln(os.Stderr, "bad -types")
			os.Exit(2)
		}
		p.SampleType = append(p.SampleType, &profile.ValueType{Type: tu[0], Unit: tu[1]})
	}
	p.DefaultSampleType = *defaultType
	for i := 0; i < *comments; i++ {
		p.Comments = append(p.Comments, fmt.Sprintf("comment %d (seed %d)", i%3, *seed))
	}

	// Mappings: the main binary first, then libraries; with -aslr each seed loads them at a
	// different base, which Merge must undo.
	var shift uint64
	if *aslr {
		shift = uint64(*seed) * 0x10000000
	}
	for i := 0; i < *nMappings; i++ {
		m := &profile.Mapping{
			ID:              idOf(i),
			Start:           0x400000 + uint64(i)*0x10000000 + shift,
			Offset:          uint64(i) * 0x1000,
			HasFunctions:    true,
			HasFilenames:    i%2 == 0,
			HasLineNumbers:  true,
			HasInlineFrames: i != 1,
		}
		m.Limit = m.Start + 0x800000 + uint64(u.Intn(0x1000))
		if i == 0 {
			m.File = "/usr/local/bin/svc"
			m.BuildID = "b1d0000000000000000000000000000000000001"
		} else {
			m.File = fmt.Sprintf("/lib/x86_64-linux-gnu/lib%s.so.%d", words[i%len(words)], i)
			if i%2 == 0 {
				m.BuildID = fmt.Sprintf("%040x", i*7777)
			}
		}
		p.Mapping = append(p.Mapping, m)
	}
	if *fake {
		p.Mapping = append(p.Mapping, &profile.Mapping{ID: idOf(len(p.Mapping)), Start: 0x7f0000000000,
			Limit: 0x7f0000001000})
	}

	for i := 0; i < *nFunctions; i++ {
		name := funcName(u, i)
		f := &profile.Function{
			ID:         idOf(i),
			Name:       name,
			SystemName: name,
			Filename:   fmt.Sprintf("/src/acme/svc/%s/%s.go", words[i%len(words)], words[(i/7)%len(words)]),
			StartLine:  int64(10 + u.Intn(2000)),
		}
		if u.Intn(10) == 0 {
			f.SystemName = name + ".abi0"
		}
		if *noStartLine {
			f.StartLine = 0
		}
		p.Function = append(p.Function, f)
	}
	for i := 0; i < *nLocations; i++ {
		l := &profile.Location{ID: idOf(i)}
		if len(p.Mapping) > 0 && u.Float64() >= *noMapping {
			m := p.Mapping[u.Intn(len(p.Mapping))]
			l.Mapping = m
			l.Address = m.Start + uint64(u.Intn(int(m.Limit-m.Start)))
		} else {
			l.Address = 0x1000 + uint64(u.Intn(1<<20))
		}
		n := 1
		if u.Float64() < *inline {
			n += 1 + u.Intn(3)
		}
		for j := 0; j < n; j++ {
			f := p.Function[u.Intn(len(p.Function))]
			l.Line = append(l.Line, profile.Line{Function: f, Line: f.StartLine + int64(u.Intn(200))})
		}
		l.IsFolded = u.Float64() < *folded
		p.Location = append(p.Location, l)
	}

	// Call paths from a few roots; the same universe gives the same paths.
	np := *nPaths
	if np <= 0 {
		np = *nSamples
	}
	roots := p.Location[:1+len(p.Location)/50]
	paths := make([][]*profile.Location, np)
	for i := range paths {
		d := 1 + u.Intn(*depth)
		stack := make([]*profile.Location, d)
		stack[d-1] = roots[u.Intn(len(roots))]
		for j := d - 2; j >= 0; j-- {
			stack[j] = p.Location[u.Intn(len(p.Location))]
		}
		paths[i] = stack
	}

	labelValues := []string{"GET /api", "POST /api", "tenant-a", "tenant-b", "tenant-c", "batch", "", "x"}
	units := []string{"bytes", "requests", "ms"}
	for i := 0; i < *nSamples; i++ {
		s := &profile.Sample{}
		// Skewed choice: low paths are hot, as in real profiles.
		k := int(float64(np) * r.Float64() * r.Float64())
		if r.Float64() >= *emptyStacks {
			s.Location = paths[k]
		}
		count := int64(1 + r.Intn(10))
		for t := range p.SampleType {
			v := count
			if t > 0 {
				v = count * *period
			}
			s.Value = append(s.Value, v)
		}
		if r.Float64() < *zero {
			for t := range s.Value {
				s.Value[t] = 0
			}
		} else if r.Float64() < *negative {
			for t := range s.Value {
				s.Value[t] = -s.Value[t]
			}
		}
		if *labelled < 1 && lr.Float64() >= *labelled {
			p.Sample = append(p.Sample, s)
			continue
		}
		if *pathLabels {
			// Real label sets follow the code path: the handler is fixed by the path, only a
			// tenant varies. Merging profiles of one service then folds most samples.
			if *nLabels > 0 {
				s.Label = map[string][]string{"handler": {labelValues[k%6]}}
				if *nLabels > 1 {
					s.Label["tenant"] = []string{labelValues[2+r.Intn(3)]}
				}
			}
			if *nNumLabels > 0 {
				s.NumLabel = map[string][]int64{"bytes": {int64(k%7) * 4096}}
				s.NumUnit = map[string][]string{"bytes": {"bytes"}}
			}
			p.Sample = append(p.Sample, s)
			continue
		}
		for j := 0; j < *nLabels; j++ {
			if r.Intn(2) == 0 {
				continue
			}
			if s.Label == nil {
				s.Label = map[string][]string{}
			}
			key := fmt.Sprintf("key%d", j)
			n := 1 + r.Intn(2)
			for v := 0; v < n; v++ {
				val := labelValues[r.Intn(len(labelValues))]
				if val == "" {
					val = "empty"
				}
				s.Label[key] = append(s.Label[key], val)
			}
		}
		for j := 0; j < *nNumLabels; j++ {
			if r.Intn(2) == 0 {
				continue
			}
			if s.NumLabel == nil {
				s.NumLabel = map[string][]int64{}
				s.NumUnit = map[string][]string{}
			}
			key := fmt.Sprintf("num%d", j)
			n := 1 + r.Intn(2)
			withUnits := r.Float64() >= *unitless
			for v := 0; v < n; v++ {
				s.NumLabel[key] = append(s.NumLabel[key], int64(r.Intn(5))*1024+1)
				if withUnits {
					s.NumUnit[key] = append(s.NumUnit[key], units[j%len(units)])
				}
			}
		}
		p.Sample = append(p.Sample, s)
	}
	if err := p.CheckValid(); err != nil {
		fmt.Fprintln(os.Stderr, "generated an invalid profile:", err)
		os.Exit(1)
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *raw {
		err = p.WriteUncompressed(f)
	} else {
		err = p.Write(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
