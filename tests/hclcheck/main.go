// Command hclcheck reads HCL from stdin, evaluates every top-level attribute
// with no variables and no functions, and prints them as a JSON object of
// strings. Any interpolation of a variable or function fails the
// evaluation, so a value that comes back intact stayed data.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

func main() {
	src, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	file, diags := hclsyntax.ParseConfig(src, "config.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		fail(diags)
	}
	attrs, diags := file.Body.JustAttributes()
	if diags.HasErrors() {
		fail(diags)
	}
	out := map[string]any{}
	for name, attr := range attrs {
		value, diags := attr.Expr.Value(nil)
		if diags.HasErrors() {
			fail(diags)
		}
		if value.Type() == cty.String {
			out[name] = value.AsString()
		} else {
			out[name] = value.GoString()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
