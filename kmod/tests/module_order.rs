//@ stage 3
//! The module map points one way: `lib.rs` lists the modules bottom-up,
//! and no module's code (tests aside) names a module listed after it. A
//! reader can then go top-down, from `dev` to `segments`, without meeting
//! a name that is not yet explained.

use std::fs;
use std::path::{Path, PathBuf};

/// The modules in the order `lib.rs` declares them.
fn declared_order(src: &Path) -> Vec<String> {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    lib.lines().filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';').map(String::from)).collect()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("a source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its test modules (from the first
/// `#[cfg(test)]` on, where every file keeps them) and without comments.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("a source file");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_module_uses_only_modules_declared_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = declared_order(&src);
    assert!(order.len() > 1, "lib.rs declares its modules with `pub mod`");
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.iter().next().and_then(|c| c.to_str()).unwrap_or_default().trim_end_matches(".rs");
        let Some(own) = rank(top) else { continue };
        let code = code(&file);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if rank(&name).is_some_and(|r| r > own) {
                upward.push(format!("{} uses crate::{name}", relative.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "dependencies that point up the module map:\n{}", upward.join("\n"));
}
