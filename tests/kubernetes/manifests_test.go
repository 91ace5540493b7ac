// The manifests of deploy/kubernetes, decoded strictly into the official Kubernetes API
// types (k8s.io/api), as the API server would take them: an unknown or misspelt field, or a
// value of the wrong type, fails the test.
package manifests

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"sigs.k8s.io/yaml"
)

// deployFile reads a file of deploy/kubernetes.
func deployFile(t *testing.T, name string) []byte {
	t.Helper()
	root := os.Getenv("MEGAVISOR_ROOT")
	if root == "" {
		root = "../.."
	}
	text, err := os.ReadFile(filepath.Join(root, "deploy", "kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// manifest decodes a manifest strictly into its API type.
func manifest(t *testing.T, name string, into interface{}) {
	t.Helper()
	if err := yaml.UnmarshalStrict(deployFile(t, name), into); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestRuntimeClassNamesTheHandler(t *testing.T) {
	var class nodev1.RuntimeClass
	manifest(t, "runtimeclass.yaml", &class)
	if class.Kind != "RuntimeClass" || class.APIVersion != "node.k8s.io/v1" {
		t.Fatalf("not a node.k8s.io/v1 RuntimeClass: %s %s", class.APIVersion, class.Kind)
	}
	if class.Name != "megavisor" || class.Handler != "megavisor" {
		t.Fatalf("RuntimeClass %q has handler %q, want megavisor/megavisor", class.Name, class.Handler)
	}
	if class.Scheduling == nil || class.Scheduling.NodeSelector["megavisor.dev/runtime"] != "true" {
		t.Fatal("pods of the class must land on nodes that have the shim")
	}
}

func TestDaemonSetServesTheSocketTheShimUses(t *testing.T) {
	var set appsv1.DaemonSet
	manifest(t, "daemonset.yaml", &set)
	if set.Kind != "DaemonSet" || set.APIVersion != "apps/v1" {
		t.Fatalf("not an apps/v1 DaemonSet: %s %s", set.APIVersion, set.Kind)
	}
	spec := set.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(spec.Containers))
	}
	command := strings.Join(spec.Containers[0].Command, " ")
	if !strings.Contains(command, "serve --socket /run/megavisor/megavisor.sock") {
		t.Fatalf("the supervisor does not serve the shim's socket: %s", command)
	}
	if set.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != set.Spec.Template.Labels["app.kubernetes.io/name"] {
		t.Fatal("the selector does not select the template's pods")
	}
	hostPaths := map[string]string{}
	for _, volume := range spec.Volumes {
		if volume.HostPath != nil {
			hostPaths[volume.Name] = volume.HostPath.Path
		}
	}
	if hostPaths["socket"] != "/run/megavisor" {
		t.Fatalf("the socket is not on the node's /run/megavisor: %v", hostPaths)
	}
	if !bytes.Contains(deployFile(t, "shim.toml"), []byte(`socket = "/run/megavisor/megavisor.sock"`)) {
		t.Fatal("shim.toml does not name the DaemonSet's socket")
	}
}

func TestAllowlistIsAConfigMapOfDigests(t *testing.T) {
	var config corev1.ConfigMap
	manifest(t, "allowlist.yaml", &config)
	if config.Kind != "ConfigMap" || config.Name != "megavisor-allowlist" {
		t.Fatalf("not the megavisor-allowlist ConfigMap: %s %s", config.Kind, config.Name)
	}
	digest := regexp.MustCompile(`^((sha256|blake3):)?[0-9a-f]{64}$`)
	list, ok := config.Data["allowlist"]
	if !ok {
		t.Fatal("the ConfigMap has no allowlist key")
	}
	for _, line := range strings.Split(list, "\n") {
		line = strings.TrimSpace(strings.SplitN(line, "#", 2)[0])
		if line != "" && !digest.MatchString(line) && !strings.HasPrefix(line, "/") {
			t.Fatalf("allowlist line %q is neither a digest nor an absolute path", line)
		}
	}
}

func TestNamespaceAndExamplePod(t *testing.T) {
	var namespace corev1.Namespace
	manifest(t, "namespace.yaml", &namespace)
	if namespace.Name != "megavisor" {
		t.Fatalf("namespace %q", namespace.Name)
	}
	var pod corev1.Pod
	manifest(t, "pod-example.yaml", &pod)
	if pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName != "megavisor" {
		t.Fatal("the example pod does not use the megavisor RuntimeClass")
	}
}

func TestUnknownFieldsAreRefused(t *testing.T) {
	var class nodev1.RuntimeClass
	err := yaml.UnmarshalStrict([]byte("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: x}\nhandlr: megavisor\n"), &class)
	if err == nil || !strings.Contains(err.Error(), "handlr") {
		t.Fatalf("a misspelt field must be refused, got %v", err)
	}
}
