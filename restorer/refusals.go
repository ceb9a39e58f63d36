package restorer

import (
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/image"
)

// Refusals applies to checkpoint c the rules of restore's preflight that
// depend on the tree alone, not on the machine restoring it (pids free,
// paths present, the kernel's vdso): what no restore anywhere could give
// back. Every fd must be of a kind the restorer makes (or be a standard
// fd taken over, or a terminal, which --shell-job takes), pass its kind's
// image.Refusal rule, which the dump applied too, and every file mapping
// must name a file that was not already deleted; the pty pairs' rules
// (image.PtyRefusal) and the session rules with and without --shell-job
// (image.SessionRefusalAnyFlags) apply. A tree that a successful
// dump wrote must pass: the end-to-end tests check every one they make.
func Refusals(c *image.Checkpoint) error {
	var errs []error
	if err := checkPtys(c); err != nil {
		errs = append(errs, err)
	}
	if pairs, err := ptyPairs(c); err == nil {
		if err := image.TerminalRefusalAnyFlags(c, pairs); err != nil {
			errs = append(errs, err)
		}
	}
	if err := image.SessionRefusalAnyFlags(c); err != nil {
		errs = append(errs, err)
	}
	for _, t := range c.Tasks {
		if t.State == "Z" {
			continue
		}
		for _, v := range t.VMAs {
			if err := checkMappedFile(t, v); err != nil {
				errs = append(errs, err)
			}
		}
		if err := image.VMARefusal(t); err != nil {
			errs = append(errs, err)
		}
		for _, f := range t.FDs {
			if err := refusedFD(c, t, f); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// refusedFD is checkFD without the kinds' checks of the restoring machine:
// a kind's check runs only if it looks at the tree alone (treeChecker).
func refusedFD(c *image.Checkpoint, t *image.Task, f *image.FD) error {
	if inheritFD(c, t.PID, f, nil) || (f.Kind == image.FDChar && isTTY(f.Path)) {
		return nil
	}
	k, err := kindOf(c, f)
	if _, end := k.(endKind); end {
		err = errNoKind // a pipe or socket not taken over, without its object
	}
	if _, ok := k.(treeChecker); ok && err == nil {
		err = k.check(c, t, f)
	}
	if err == nil {
		err = image.Refusal(f)
	}
	if err != nil {
		return fmt.Errorf("task %d: fd %d (%s %s): %w", t.PID, f.Num, f.Kind, f.Path, err)
	}
	return nil
}

// treeChecker is a kind whose check looks at the tree alone (not at the
// restoring machine), so Refusals applies it too.
type treeChecker interface{ checksTreeOnly() }
