package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podVolumes materialises a pod's volumes as directories under the pod dir; pod-exec
// bind-mounts them at their mountPaths in the process's private mount namespace, so
// in-cluster clients find /var/run/secrets/kubernetes.io/serviceaccount/token as usual.
type podVolumes struct {
	root       string
	dirs       map[string]string // volume name -> directory (or host path)
	tokens     []tokenFile
	kubeconfig string
}

type tokenFile struct {
	path      string
	audiences []string
	expiry    int64
}

func (r *podRunner) prepareVolumes(ctx context.Context) (*podVolumes, error) {
	pod := r.pod()
	v := &podVolumes{root: filepath.Join(r.dir, "volumes"), dirs: map[string]string{}}
	for _, vol := range pod.Spec.Volumes {
		dir := filepath.Join(v.root, vol.Name)
		src := vol.VolumeSource
		switch {
		case src.HostPath != nil:
			v.dirs[vol.Name] = src.HostPath.Path
			continue
		case src.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, err
			}
		case src.Projected != nil:
			for _, ps := range src.Projected.Sources {
				if err := r.projectSource(ctx, v, dir, ps); err != nil {
					return nil, fmt.Errorf("volume %s: %w", vol.Name, err)
				}
			}
		case src.ConfigMap != nil:
			if err := r.projectSource(ctx, v, dir, corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: src.ConfigMap.LocalObjectReference, Items: src.ConfigMap.Items, Optional: src.ConfigMap.Optional}}); err != nil {
				return nil, fmt.Errorf("volume %s: %w", vol.Name, err)
			}
		case src.Secret != nil:
			if err := r.projectSource(ctx, v, dir, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: src.Secret.SecretName}, Items: src.Secret.Items, Optional: src.Secret.Optional}}); err != nil {
				return nil, fmt.Errorf("volume %s: %w", vol.Name, err)
			}
		case src.DownwardAPI != nil:
			if err := r.projectSource(ctx, v, dir, corev1.VolumeProjection{DownwardAPI: &corev1.DownwardAPIProjection{Items: src.DownwardAPI.Items}}); err != nil {
				return nil, fmt.Errorf("volume %s: %w", vol.Name, err)
			}
		default:
			return nil, fmt.Errorf("volume %s: unsupported volume type (the process node supports emptyDir, hostPath, configMap, secret, downwardAPI, projected)", vol.Name)
		}
		v.dirs[vol.Name] = dir
	}
	// A kubeconfig for the pod's service account, unless automounting is switched off.
	if am := pod.Spec.AutomountServiceAccountToken; am == nil || *am {
		tokPath := filepath.Join(r.dir, "serviceaccount-token")
		if err := r.writeToken(ctx, tokPath, nil, 3607); err != nil {
			return nil, err
		}
		v.tokens = append(v.tokens, tokenFile{path: tokPath, expiry: 3607})
		kc := filepath.Join(r.dir, "kubeconfig")
		server := fmt.Sprintf("https://%s:%d", r.a.hostIP, r.a.apiPort)
		if err := writeKubeconfig(kc, server, r.a.caPEM, nil, nil, tokPath); err != nil {
			return nil, err
		}
		v.kubeconfig = kc
	}
	return v, nil
}

func (r *podRunner) projectSource(ctx context.Context, v *podVolumes, dir string, ps corev1.VolumeProjection) error {
	pod := r.pod()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	writeItems := func(data map[string][]byte, items []corev1.KeyToPath) error {
		if len(items) == 0 {
			for k, val := range data {
				if err := atomicWrite(filepath.Join(dir, k), val); err != nil {
					return err
				}
			}
			return nil
		}
		for _, it := range items {
			val, ok := data[it.Key]
			if !ok {
				return fmt.Errorf("no key %q", it.Key)
			}
			if err := atomicWrite(filepath.Join(dir, it.Path), val); err != nil {
				return err
			}
		}
		return nil
	}
	switch {
	case ps.ServiceAccountToken != nil:
		exp := int64(3600)
		if ps.ServiceAccountToken.ExpirationSeconds != nil {
			exp = *ps.ServiceAccountToken.ExpirationSeconds
		}
		var aud []string
		if ps.ServiceAccountToken.Audience != "" {
			aud = []string{ps.ServiceAccountToken.Audience}
		}
		path := filepath.Join(dir, ps.ServiceAccountToken.Path)
		if err := r.writeToken(ctx, path, aud, exp); err != nil {
			return err
		}
		v.tokens = append(v.tokens, tokenFile{path: path, audiences: aud, expiry: exp})
	case ps.ConfigMap != nil:
		cm, err := r.a.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ps.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && ps.ConfigMap.Optional != nil && *ps.ConfigMap.Optional {
				return nil
			}
			return fmt.Errorf("configmap %q: %w", ps.ConfigMap.Name, err)
		}
		data := map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		return writeItems(data, ps.ConfigMap.Items)
	case ps.Secret != nil:
		s, err := r.a.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, ps.Secret.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && ps.Secret.Optional != nil && *ps.Secret.Optional {
				return nil
			}
			return fmt.Errorf("secret %q: %w", ps.Secret.Name, err)
		}
		return writeItems(s.Data, ps.Secret.Items)
	case ps.DownwardAPI != nil:
		for _, it := range ps.DownwardAPI.Items {
			var val string
			var err error
			switch {
			case it.FieldRef != nil:
				val, err = r.fieldValue(it.FieldRef.FieldPath)
			case it.ResourceFieldRef != nil:
				c := findContainer(pod, it.ResourceFieldRef.ContainerName)
				if c == nil {
					return fmt.Errorf("downwardAPI: no container %q", it.ResourceFieldRef.ContainerName)
				}
				val, err = resourceValue(c, it.ResourceFieldRef, r.a)
			}
			if err != nil {
				return err
			}
			if err := atomicWrite(filepath.Join(dir, it.Path), []byte(val)); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unsupported projected volume source")
	}
	return nil
}

func findContainer(p *corev1.Pod, name string) *corev1.Container {
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name || name == "" {
			return &p.Spec.Containers[i]
		}
	}
	return nil
}

// writeToken asks the TokenRequest API for a token of the pod's service account, bound
// to the pod, and writes it to path.
func (r *podRunner) writeToken(ctx context.Context, path string, aud []string, exp int64) error {
	pod := r.pod()
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := r.a.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences: aud, ExpirationSeconds: &exp,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	return atomicWrite(path, []byte(tr.Status.Token))
}

// refreshTokens renews every token well before it expires (every fifth of its lifetime).
func (v *podVolumes) refreshTokens(ctx context.Context, r *podRunner) {
	if len(v.tokens) == 0 {
		return
	}
	every := 10 * time.Minute
	for _, t := range v.tokens {
		every = min(every, time.Duration(t.expiry)*time.Second/5)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.stopCh:
			return
		case <-time.After(every):
		}
		for _, t := range v.tokens {
			if err := r.writeToken(ctx, t.path, t.audiences, t.expiry); err != nil {
				r.logf("refresh token: %v", err)
			}
		}
	}
}

func (v *podVolumes) mountsFor(c *corev1.Container) ([]mountSpec, error) {
	var out []mountSpec
	for _, m := range c.VolumeMounts {
		src, ok := v.dirs[m.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q: no such volume", m.Name)
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
		}
		out = append(out, mountSpec{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}
	return out, nil
}

func atomicWrite(path string, data []byte) error {
	if strings.Contains(path, "..") {
		return fmt.Errorf("bad path %q", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
