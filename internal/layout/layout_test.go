package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// root is the repository's top folder, two levels above this package.
const root = "../.."

// goFiles lists the repository's Go files (tests too when tests is true), relative to root.
func goFiles(t *testing.T, tests bool) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && p != root || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && (tests || !strings.HasSuffix(p, "_test.go")) {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func parse(t *testing.T, fset *token.FileSet, rel string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(fset, filepath.Join(root, rel), nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestEveryPackageHasDocGo: a reader finds each package's role in its doc.go.
func TestEveryPackageHasDocGo(t *testing.T) {
	dirs := map[string]bool{}
	for _, f := range goFiles(t, true) {
		dirs[filepath.Dir(f)] = true
	}
	for dir := range dirs {
		if _, err := os.Stat(filepath.Join(root, dir, "doc.go")); err != nil {
			t.Errorf("%s has no doc.go: add one with the package comment (its role)", dir)
		}
	}
}

// TestArchitectureListsEveryPackage: docs/architecture.md matches the tree, so a reader
// finds every package's role there.
func TestArchitectureListsEveryPackage(t *testing.T) {
	arch, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]bool{}
	for _, f := range goFiles(t, true) {
		dirs[filepath.ToSlash(filepath.Dir(f))] = true
	}
	for dir := range dirs {
		if !strings.Contains(string(arch), "`"+dir+"`") {
			t.Errorf("docs/architecture.md does not list package %s: add a row with its role", dir)
		}
	}
}

// TestNoFunctionLongerThan120Lines: outside tests, a function that does not fit on a
// screen or two is split where a name helps the reader.
func TestNoFunctionLongerThan120Lines(t *testing.T) {
	fset := token.NewFileSet()
	for _, rel := range goFiles(t, false) {
		ast.Inspect(parse(t, fset, rel), func(n ast.Node) bool {
			var body *ast.BlockStmt
			switch fn := n.(type) {
			case *ast.FuncDecl:
				body = fn.Body
			case *ast.FuncLit:
				body = fn.Body
			}
			if body == nil {
				return true
			}
			start, end := fset.Position(n.Pos()), fset.Position(n.End())
			if lines := end.Line - start.Line + 1; lines > 120 {
				t.Errorf("%s:%d: function of %d lines; split it (at most 120)", rel, start.Line, lines)
			}
			return true
		})
	}
}

// sqlState is a string that reads as a SQLSTATE: a class PostgreSQL uses (or reshard's
// own RS) and three more characters with a digit among the five.
var sqlState = regexp.MustCompile(`^(0[0-9A-Z]|2[0-9A-F]|3[4-9A-F]|4[024]|5[3-8]|72|F0|HV|P0|XX|RS)[0-9A-Z]{3}$`)

// TestNoBareSQLStateOutsidePgerr: every code reshard reacts to is named in internal/pgerr,
// so a reader finds them all in one place.
func TestNoBareSQLStateOutsidePgerr(t *testing.T) {
	fset := token.NewFileSet()
	for _, rel := range goFiles(t, false) {
		if filepath.Dir(rel) == filepath.Join("internal", "pgerr") {
			continue
		}
		ast.Inspect(parse(t, fset, rel), func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && sqlState.MatchString(s) && strings.ContainsAny(s, "0123456789") {
				t.Errorf("%s:%d: bare SQLSTATE %q; name it in internal/pgerr and use pgerr.Is", rel, fset.Position(lit.Pos()).Line, s)
			}
			return true
		})
	}
}

// TestNothingPointsAtADesignFile: code and docs/ stand on their own; what a reader needs
// is written in docs/, not in a file outside the repository.
func TestNothingPointsAtADesignFile(t *testing.T) {
	design := regexp.MustCompile(`(?i)design\.md|\.\./shared/`)
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(root, "README.md")}
	for _, rel := range goFiles(t, true) {
		files = append(files, filepath.Join(root, rel))
	}
	for _, f := range append(files, docs...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if loc := design.FindIndex(b); loc != nil && !strings.HasSuffix(f, "layout_test.go") {
			t.Errorf("%s points at a design file outside the repository (%q); point at docs/ instead", f, b[loc[0]:loc[1]])
		}
	}
}
