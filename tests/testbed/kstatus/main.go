// Reads one Kubernetes object (YAML or JSON) on stdin and prints how kstatus, the library
// Flux, `kubectl wait`-style tools and cli-utils judge custom resources with, reads it:
// {"status": "Current|InProgress|Failed|Terminating|Unknown", "message": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	data, err = yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	// The unstructured decoder keeps integers int64, as kstatus reads metadata.generation.
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(data); err != nil {
		return err
	}
	result, err := status.Compute(object)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(map[string]string{"status": result.Status.String(), "message": result.Message})
}
