// pprofmerge: the reference merge, exactly what the original autopgo worker does with
// github.com/google/pprof/profile (Debian's build): Parse each input, Merge, Prune with the
// rules of one app from the seed's prune JSON, Write. -compatibilize first keeps the sample types
// common to every input (upstream pprof's CompatibilizeSampleTypes, which Debian's build lacks:
// copied below), -compact compacts after pruning: what autopgo's merge does on top. -scale
// R1,R2,... gives one ratio per input, applied with (*Profile).Scale after -compatibilize and
// before Merge (math.Round of each value times the ratio; samples whose values all become 0 are
// dropped; a ratio of exactly 1 leaves the input untouched): decayed or normalized merges.
//
//	pprofmerge -o OUT [-compatibilize] [-scale R,...] [-prune rules.json -app NAME [-compact]] IN...
//	pprofmerge -rewrite -o OUT IN                            (Parse + Write only)
//
// Errors go to stderr as "parse N: ...", "scale: ...", "merge: ..." or "prune: ..." with exit
// status 1.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

type rule struct {
	Drop *string `json:"drop"`
	Keep *string `json:"keep"`
}

type appRules struct {
	App   string `json:"app"`
	Rules []rule `json:"rules"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	out := flag.String("o", "", "output file")
	prunePath := flag.String("prune", "", "prune rules (JSON)")
	app := flag.String("app", "", "application whose rules apply")
	rewrite := flag.Bool("rewrite", false, "parse and write one profile")
	compat := flag.Bool("compatibilize", false, "keep the sample types common to every input")
	compact := flag.Bool("compact", false, "compact after pruning")
	scale := flag.String("scale", "", "one ratio per input (comma-separated), applied before the merge")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fail("usage: pprofmerge -o OUT [-compatibilize] [-scale R,...] [-prune FILE -app NAME] IN...")
	}
	var ratios []float64
	if *scale != "" {
		for _, f := range strings.Split(*scale, ",") {
			r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil {
				fail("scale: %v", err)
			}
			ratios = append(ratios, r)
		}
		if *rewrite {
			fail("scale: -rewrite takes no ratios")
		}
		if len(ratios) != flag.NArg() {
			fail("scale: %d ratios for %d inputs", len(ratios), flag.NArg())
		}
	}
	var profs []*profile.Profile
	for i, path := range flag.Args() {
		f, err := os.Open(path)
		if err != nil {
			fail("parse %d: %v", i, err)
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			fail("parse %d: %v", i, err)
		}
		profs = append(profs, p)
	}
	var merged *profile.Profile
	if *rewrite {
		merged = profs[0]
	} else {
		var err error
		if *compat {
			if err := compatibilizeSampleTypes(profs); err != nil {
				fail("merge: %v", err)
			}
		}
		for i, r := range ratios {
			profs[i].Scale(r)
		}
		merged, err = profile.Merge(profs)
		if err != nil {
			fail("merge: %v", err)
		}
	}
	if *prunePath != "" {
		data, err := os.ReadFile(*prunePath)
		if err != nil {
			fail("prune: %v", err)
		}
		var cfg []appRules
		if err := json.Unmarshal(data, &cfg); err != nil {
			fail("prune: %v", err)
		}
		for _, c := range cfg {
			if c.App != *app {
				continue
			}
			for i, r := range c.Rules {
				// The worker decodes into *regexp.Regexp: a missing "keep" stays nil.
				if r.Drop == nil {
					fail("prune: rule %d: no drop pattern", i+1)
				}
				drop, err := regexp.Compile(*r.Drop)
				if err != nil {
					fail("prune: rule %d: %v", i+1, err)
				}
				var keep *regexp.Regexp
				if r.Keep != nil {
					if keep, err = regexp.Compile(*r.Keep); err != nil {
						fail("prune: rule %d: %v", i+1, err)
					}
				}
				merged.Prune(drop, keep)
			}
			break
		}
		if *compact {
			merged = merged.Compact()
		}
	}
	f, err := os.Create(*out)
	if err != nil {
		fail("write: %v", err)
	}
	if err := merged.Write(f); err != nil {
		fail("write: %v", err)
	}
	if err := f.Close(); err != nil {
		fail("write: %v", err)
	}
}

// compatibilizeSampleTypes is upstream pprof's CompatibilizeSampleTypes (profile/merge.go, 2022).
func compatibilizeSampleTypes(ps []*profile.Profile) error {
	sTypes := commonSampleTypes(ps)
	if len(sTypes) == 0 {
		return fmt.Errorf("profiles have empty common sample type list")
	}
	for _, p := range ps {
		if err := compatibilize(p, sTypes); err != nil {
			return err
		}
	}
	return nil
}

func commonSampleTypes(ps []*profile.Profile) []string {
	if len(ps) == 0 {
		return nil
	}
	sTypes := map[string]int{}
	for _, p := range ps {
		for _, st := range p.SampleType {
			sTypes[st.Type]++
		}
	}
	var res []string
	for _, st := range ps[0].SampleType {
		if sTypes[st.Type] == len(ps) {
			res = append(res, st.Type)
		}
	}
	return res
}

func compatibilize(p *profile.Profile, sTypes []string) error {
	if len(sTypes) == 0 {
		return fmt.Errorf("sample type list is empty")
	}
	defaultSampleType := sTypes[0]
	reMap, needToModify := make([]int, len(sTypes)), false
	for i, st := range sTypes {
		if st == p.DefaultSampleType {
			defaultSampleType = p.DefaultSampleType
		}
		idx := searchValueType(p.SampleType, st)
		if idx < 0 {
			return fmt.Errorf("%q sample type is not found in profile", st)
		}
		reMap[i] = idx
		if idx != i {
			needToModify = true
		}
	}
	if !needToModify && len(sTypes) == len(p.SampleType) {
		return nil
	}
	p.DefaultSampleType = defaultSampleType
	oldSampleTypes := p.SampleType
	p.SampleType = make([]*profile.ValueType, len(sTypes))
	for i, idx := range reMap {
		p.SampleType[i] = oldSampleTypes[idx]
	}
	values := make([]int64, len(sTypes))
	for _, s := range p.Sample {
		for i, idx := range reMap {
			values[i] = s.Value[idx]
		}
		s.Value = s.Value[:len(values)]
		copy(s.Value, values)
	}
	return nil
}

func searchValueType(vts []*profile.ValueType, s string) int {
	for i := range vts {
		if vts[i].Type == s {
			return i
		}
	}
	return -1
}
