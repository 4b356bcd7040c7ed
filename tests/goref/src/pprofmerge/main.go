// pprofmerge: the reference merge, exactly what the original autopgo worker does with
// github.com/google/pprof/profile (Debian's build): Parse each input, Merge, Prune with the
// rules of one app from the seed's prune JSON, Write.
//
//	pprofmerge -o OUT [-prune rules.json -app NAME] IN...   (inputs merged in the given order)
//	pprofmerge -rewrite -o OUT IN                            (Parse + Write only)
//
// Errors go to stderr as "parse N: ...", "merge: ..." or "prune: ..." with exit status 1.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"

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
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fail("usage: pprofmerge -o OUT [-prune FILE -app NAME] IN...")
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
