//! Stamps the binary with the git commit and target for `tally --version`.
//! Without git (e.g. a source tarball) the commit reads "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    let commit = if dirty && commit != "unknown" {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=TALLY_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=TALLY_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
    // Re-stamp when HEAD moves (a new commit or another branch). Paths come
    // from `--git-path`, which resolves a worktree's refs to the shared git
    // dir; only existing files are watched, because a missing one makes
    // cargo rerun this script, and rebuild the crate, on every build.
    let watch_path =
        |name: &str| git(&["rev-parse", "--git-path", name]).map(std::path::PathBuf::from);
    for name in ["HEAD", "packed-refs"] {
        if let Some(path) = watch_path(name).filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    // A branch whose ref is only in `packed-refs` gets its loose ref file at
    // its next commit: until then the refs directory holding it is watched
    // instead (cargo scans a watched directory), so that commit re-stamps.
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = watch_path(&branch)
    {
        let watched = if path.exists() {
            Some(path.as_path())
        } else {
            path.parent().filter(|dir| dir.exists())
        };
        if let Some(watched) = watched {
            println!("cargo:rerun-if-changed={}", watched.display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
