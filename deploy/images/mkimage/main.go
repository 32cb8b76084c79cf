// Command mkimage writes a container image without a container engine: one layer made of the
// files it is given (no base image), a config with the entrypoint and user, as a docker-archive
// tarball that `ctr images import` (and `docker load`) read.
//
//	mkimage -o out.tar -tag sluice/sluice:0.1.0 -entrypoint /usr/local/bin/gateway \
//	  -user 65532:65532 -file target/release/gateway=/usr/local/bin/gateway:0755 \
//	  -file /lib/x86_64-linux-gnu/libc.so.6=/lib/x86_64-linux-gnu/libc.so.6 -dir /tmp:1777
//
// Files are read through symbolic links and stored as regular files, owned by root, with a
// fixed modification time, so the same inputs give the same image digest. -bind-cap gives a
// file the capability to bind ports below 1024 (cap_net_bind_service+ep, as a file capability
// in the layer), as the official CoreDNS image has: a non-root process gets it only that way
// when its Pod adds NET_BIND_SERVICE.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// entry is one file or directory of the layer.
type entry struct {
	dst  string // absolute path in the image
	src  string // host path; empty for a directory
	mode int64
	// bindCap: the file carries cap_net_bind_service+ep.
	bindCap bool
}

// netBindServiceCap is a security.capability xattr value (struct vfs_cap_data, revision 2,
// little-endian): the effective flag, and CAP_NET_BIND_SERVICE (bit 10) permitted.
var netBindServiceCap = string([]byte{
	0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	0x00, 0x04, 0x00, 0x00, // permitted, capabilities 0-31
	0x00, 0x00, 0x00, 0x00, // inheritable, 0-31
	0x00, 0x00, 0x00, 0x00, // permitted, 32-63
	0x00, 0x00, 0x00, 0x00, // inheritable, 32-63
})

// epoch is the modification time of every entry and the image's creation time.
var epoch = time.Unix(0, 0).UTC()

func main() {
	var files, dirs, tags, env, bindCaps list
	out := flag.String("o", "", "the docker-archive tarball to write")
	entrypoint := flag.String("entrypoint", "", "the image's entrypoint (one path; arguments come from the Pod)")
	user := flag.String("user", "", "the user the image runs as, UID:GID")
	flag.Var(&files, "file", "HOST=IMAGE[:MODE] a file of the layer (repeatable; MODE octal, default 0644)")
	flag.Var(&dirs, "dir", "IMAGE[:MODE] an empty directory of the layer (repeatable; default 0755)")
	flag.Var(&tags, "tag", "a name the image is tagged with (repeatable, at least one)")
	flag.Var(&env, "env", "KEY=VALUE in the image's environment (repeatable)")
	flag.Var(&bindCaps, "bind-cap", "IMAGE a -file given cap_net_bind_service+ep (repeatable)")
	flag.Parse()
	if err := run(*out, *entrypoint, *user, files, dirs, tags, env, bindCaps); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run(out, entrypoint, user string, files, dirs, tags, env, bindCaps []string) error {
	if out == "" || len(tags) == 0 {
		return fmt.Errorf("-o and at least one -tag are required")
	}
	var entries []entry
	for _, f := range files {
		host, rest, ok := strings.Cut(f, "=")
		if !ok || host == "" || rest == "" {
			return fmt.Errorf("-file %q: want HOST=IMAGE[:MODE]", f)
		}
		dst, mode, err := pathMode(rest, 0o644)
		if err != nil {
			return fmt.Errorf("-file %q: %w", f, err)
		}
		entries = append(entries, entry{dst: dst, src: host, mode: mode})
	}
	for _, c := range bindCaps {
		found := false
		for i := range entries {
			if entries[i].dst == path.Clean(c) {
				entries[i].bindCap, found = true, true
			}
		}
		if !found {
			return fmt.Errorf("-bind-cap %q: no -file has that image path", c)
		}
	}
	for _, d := range dirs {
		dst, mode, err := pathMode(d, 0o755)
		if err != nil {
			return fmt.Errorf("-dir %q: %w", d, err)
		}
		entries = append(entries, entry{dst: dst, mode: mode})
	}
	layerTar, err := layer(entries)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.User = user
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, env...)
	if entrypoint != "" {
		cf.Config.Entrypoint = []string{entrypoint}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	refs := map[name.Reference]v1.Image{}
	for _, t := range tags {
		ref, err := name.NewTag(t)
		if err != nil {
			return fmt.Errorf("-tag %q: %w", t, err)
		}
		refs[ref] = img
	}
	if err := tarball.MultiRefWriteToFile(out, refs); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s (%d files, %d bytes of layer)\n", out, digest, len(entries), len(layerTar))
	return nil
}

// pathMode splits IMAGE[:MODE].
func pathMode(s string, def int64) (string, int64, error) {
	p, m, hasMode := strings.Cut(s, ":")
	if !path.IsAbs(p) {
		return "", 0, fmt.Errorf("image path %q is not absolute", p)
	}
	if !hasMode {
		return path.Clean(p), def, nil
	}
	mode, err := strconv.ParseInt(m, 8, 32)
	if err != nil {
		return "", 0, fmt.Errorf("mode %q is not octal", m)
	}
	return path.Clean(p), mode, nil
}

// layer writes the entries as an uncompressed tar, parent directories first, in path order.
func layer(entries []entry) ([]byte, error) {
	seen := map[string]bool{}
	var all []entry
	for _, e := range entries {
		if seen[e.dst] {
			return nil, fmt.Errorf("%s is given twice", e.dst)
		}
		seen[e.dst] = true
		all = append(all, e)
	}
	for _, e := range entries {
		for d := path.Dir(e.dst); d != "/"; d = path.Dir(d) {
			if !seen[d] {
				seen[d] = true
				all = append(all, entry{dst: d, mode: 0o755})
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].dst < all[j].dst })
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, e := range all {
		h := &tar.Header{Name: strings.TrimPrefix(e.dst, "/"), Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}
		if e.src == "" {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			if err := w.WriteHeader(h); err != nil {
				return nil, err
			}
			continue
		}
		data, err := os.ReadFile(e.src)
		if err != nil {
			return nil, fmt.Errorf("-file %s: %w", e.src, err)
		}
		h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		if e.bindCap {
			h.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": netBindServiceCap}
		}
		if err := w.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
