package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// nodeConfig maps container images to local commands. Every string value may use
// ${VAR} to take a value from the agent's environment (e2e/run.sh exports KFAAS_BIN,
// KFAAS_REPO); Kubernetes' own $(VAR) references are left for per-container expansion.
//
//	images:
//	- image: kfaas.dev/test-http          # exact reference (any :tag/@digest), or a prefix ending in *
//	  entrypoint: [python3, -m, http.server] # the image's ENTRYPOINT; container.command replaces it
//	  cmd: []                              # the image's CMD; container.args replaces it
//	  commands: {/usr/local/bin/kfaas: ${KFAAS_BIN}} # command paths inside the image -> local files
//	  env: {PYTHONUNBUFFERED: "1"}         # the image's ENV
//	  workingDir: /tmp                     # the image's WORKDIR; container.workingDir replaces it
//	  mounts: {/opt/kfaas/runtimes: ${KFAAS_REPO}/runtimes} # directories of the image's filesystem
//	env: {RUST_LOG: info}                  # added to every pod process
type nodeConfig struct {
	Images []imageRule       `json:"images"`
	Env    map[string]string `json:"env,omitempty"`
	// PodKubeconfig: set KUBECONFIG for pod processes to a kubeconfig holding the pod's
	// service-account token (default true). The in-cluster files are mounted too.
	PodKubeconfig *bool `json:"podKubeconfig,omitempty"`
}

type imageRule struct {
	Image      string            `json:"image"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Commands   map[string]string `json:"commands,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	// Mounts: path inside the image -> local directory, bind-mounted (read-only) in the
	// process's private mount namespace, so the image's own paths resolve.
	Mounts map[string]string `json:"mounts,omitempty"`
}

func loadNodeConfig(path string) (*nodeConfig, error) {
	cfg := &nodeConfig{}
	if path == "" {
		return cfg, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict([]byte(os.ExpandEnv(string(raw))), cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, r := range cfg.Images {
		if r.Image == "" {
			return nil, fmt.Errorf("%s: images[%d]: image is empty", path, i)
		}
	}
	// Longest (most specific) rule first.
	sort.SliceStable(cfg.Images, func(i, j int) bool { return len(cfg.Images[i].Image) > len(cfg.Images[j].Image) })
	return cfg, nil
}

func (c *nodeConfig) podKubeconfig() bool { return c.PodKubeconfig == nil || *c.PodKubeconfig }

// match finds the rule for an image reference.
func (c *nodeConfig) match(image string) *imageRule {
	for i := range c.Images {
		r := &c.Images[i]
		if p, ok := strings.CutSuffix(r.Image, "*"); ok {
			if strings.HasPrefix(image, p) {
				return r
			}
			continue
		}
		if image == r.Image || strings.HasPrefix(image, r.Image+":") || strings.HasPrefix(image, r.Image+"@") {
			return r
		}
	}
	return nil
}

// resolveCommand maps a command path or name used inside the image to a local file.
func (r *imageRule) resolveCommand(cmd string) string {
	if r == nil {
		return cmd
	}
	if local, ok := r.Commands[cmd]; ok {
		return local
	}
	if local, ok := r.Commands[filepath.Base(cmd)]; ok {
		return local
	}
	return cmd
}
