//! `source`: git describe of the workspace, taken apart so the version step can build
//! `TAG-COMMITS-SHA` without parsing git's output itself.

mod clean;

pub use clean::describe_key;

use super::bindings::wharf::step::source::{Host, Revision};
use super::bindings::wharf::step::types::{ErrorKind, StepError};
use super::{CallResult, StepCall, step_error};
use std::path::Path;

/// `source` needs nothing but the step's call context.
impl Host for &StepCall {
    async fn describe(&mut self) -> CallResult<Revision> {
        let call = *self;
        call.taped("wharf:step/source", "describe", &(), async {
            call.grants.check_source()?;
            describe(&call.scope.workspace).await
        })
        .await
    }
}

async fn git(dir: &Path, args: &[&str]) -> Result<Option<String>, StepError> {
    let out = git_command(dir, args).output().await.map_err(|e| {
        step_error(
            ErrorKind::Permanent,
            format!("cannot run git: {e}; install git on the machine running wharf"),
        )
    })?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// The sha256 of what git prints, read as it comes (a diff can be large).
async fn git_digest(dir: &Path, args: &[&str]) -> Option<String> {
    use sha2::Digest as _;
    use tokio::io::AsyncReadExt;
    let mut child = git_command(dir, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let mut hasher = sha2::Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stdout.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => hasher.update(&chunk[..n]),
            Err(_) => return None,
        }
    }
    child
        .wait()
        .await
        .ok()?
        .success()
        .then(|| hex::encode(hasher.finalize()))
}

fn git_command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    // Hooks, fsmonitor and a planted config must not run code here: the workspace is
    // partly writable by steps, and git runs with wharf's own rights.
    let mut command = tokio::process::Command::new("git");
    command
        .env_clear()
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"])
        .arg("-C")
        .arg(dir)
        .args(args);
    for key in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(key) {
            command.env(key, v);
        }
    }
    command
}

pub async fn describe(workspace: &Path) -> Result<Revision, StepError> {
    let Some(sha) = git(workspace, &["rev-parse", "--verify", "HEAD"]).await? else {
        return Err(step_error(
            ErrorKind::InvalidInput,
            format!(
                "{} is not in a git repository with at least one commit; the version comes from git describe",
                workspace.display()
            ),
        ));
    };
    let tag = git(workspace, &["describe", "--tags", "--abbrev=0", "HEAD"]).await?;
    let range = match &tag {
        Some(tag) => format!("{tag}..HEAD"),
        None => "HEAD".to_string(),
    };
    let commits = git(workspace, &["rev-list", "--count", &range])
        .await?
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let dirty = !git(workspace, &["status", "--porcelain", "--untracked-files=no"])
        .await?
        .unwrap_or_default()
        .is_empty();
    Ok(Revision {
        tag,
        commits_since: commits,
        short_sha: sha.chars().take(7).collect(),
        sha,
        dirty,
    })
}

/// The workspace's revision as a resumed run compares it: the commit, and a digest of the
/// uncommitted changes to tracked files when there are any. None outside a git repository.
/// A clean checkout is told from git's files; anything else asks git.
pub async fn workspace_revision(workspace: &Path) -> Option<String> {
    let dir = workspace.to_path_buf();
    if let Ok(Some(head)) = tokio::task::spawn_blocking(move || clean::clean_head(&dir)).await {
        return Some(head);
    }
    let sha = git(workspace, &["rev-parse", "--verify", "HEAD"]).await.ok()??;
    let dirty = !git(workspace, &["status", "--porcelain", "--untracked-files=no"])
        .await
        .ok()??
        .is_empty();
    if !dirty {
        return Some(sha);
    }
    let digest = git_digest(workspace, &["diff", "--no-ext-diff", "--binary", "HEAD"]).await?;
    Some(format!("{sha} with uncommitted changes {}", &digest[..12]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    pub fn git_repo(dir: &Path) {
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com")
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q"]);
        std::fs::write(dir.join("a.txt"), "1").unwrap();
        run(&["add", "."]);
        run(&["commit", "-qm", "one"]);
    }

    #[tokio::test]
    async fn describes_tags_commits_and_dirt() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let no_repo = describe(ws).await.unwrap_err();
        assert!(no_repo.message.contains("not in a git repository"));

        git_repo(ws);
        let r = describe(ws).await.unwrap();
        assert_eq!((r.tag.as_deref(), r.commits_since, r.dirty), (None, 1, false));
        assert_eq!(r.short_sha.len(), 7);

        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(ws)
                .args(args)
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@e")
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@e")
                .status()
                .unwrap()
        };
        git(&["tag", "v1.0.1"]);
        std::fs::write(ws.join("a.txt"), "2").unwrap();
        git(&["commit", "-qam", "two"]);
        std::fs::write(ws.join("a.txt"), "3").unwrap();
        let r = describe(ws).await.unwrap();
        assert_eq!((r.tag.as_deref(), r.commits_since, r.dirty), (Some("v1.0.1"), 1, true));
    }
}
