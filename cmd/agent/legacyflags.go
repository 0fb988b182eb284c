package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// doubleDash rewrites the single-dash long flags Go's flag package took
// (-config x, -standalone, -check.kmsg=false) to the double dash pflag
// wants, where it would read -config as the shorthands c, o, n...; it says
// so on stderr once per flag, so that scripts and unit files get fixed.
// No flag has a one-letter shorthand but -h (and bundle's -o), so any longer -name is meant
// as a long flag; a flag's value and what follows "--" are left alone.
func doubleDash(root *cobra.Command, args []string, stderr io.Writer) []string {
	long := map[string]*pflag.Flag{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.InitDefaultHelpFlag() // cobra adds --help only when it runs a command
		c.Flags().VisitAll(func(f *pflag.Flag) { long[f.Name] = f })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	out := make([]string, 0, len(args))
	warned := map[string]bool{}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		out = append(out, arg)
		if arg == "--" {
			return append(out, args[i+1:]...)
		}
		if !strings.HasPrefix(arg, "-") {
			continue
		}
		single := !strings.HasPrefix(arg, "--")
		name, _, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
		if len(name) < 2 {
			continue // -h, or - for standard input
		}
		f := long[name]
		if single {
			// Unknown too, so that pflag says "unknown flag: --name", not
			// "unknown shorthand flag 'n'".
			out[len(out)-1] = "-" + arg
			if f != nil && !warned[name] {
				warned[name] = true
				fmt.Fprintf(stderr, "nodeguard: -%s is deprecated: use --%s\n", name, name)
			}
		}
		// A flag that takes a value and was not given it with = takes the
		// next argument, which is left alone even when it starts with -.
		if f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}
