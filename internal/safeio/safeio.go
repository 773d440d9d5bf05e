// Package safeio replaces small files atomically.
package safeio

import (
	"os"
	"path/filepath"
)

// WriteFile replaces path with data atomically: it writes a temporary file
// (mode 0600, named ".<base>.*" in the same directory, so that readers
// listing the directory can skip it), syncs it, and renames it over path.
// A reader sees the old content or the new, never a mixture. The rename is
// durable only once the caller syncs the directory; callers that batch
// several updates sync once.
func WriteFile(path string, data []byte) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
