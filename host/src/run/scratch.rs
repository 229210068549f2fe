//! Scratch space of one run (or replay): the directory a WASI command step gets for its
//! output file, programs' temporary directories, and a replay's copies of the workspace. A
//! run's lives in `.wharf/scratch/RUN`, made when a step first needs it ([`HeldDir`]: most
//! runs never do), held with a lock while its run lives and removed when the run ends; what
//! a killed run left behind is swept at the next start, recognised by a lock nobody holds
//! any more, in one read of `.wharf/scratch`. What a step may write there counts against
//! its disk limit.
//!
//! A step's directory is emptied when the step ends and handed to the next step
//! ([`wharf_fs::pool`]): a chain of commands then reuses a few directories and output files
//! instead of allocating and freeing inodes for every step, which was a fifth of what a step
//! cost.

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wharf_fs::held::{self, HeldDir};
use wharf_fs::pool::DirPool;

use crate::engine::step::OUTPUT_NAME as OUTPUT;

pub struct ScratchSpace {
    /// Shared with the run's programs, whose temporary directories live in it too.
    held: Arc<HeldDir>,
    /// Step directories, emptied by the step that used them for another.
    steps: DirPool,
}

/// One step's scratch directory, empty when handed out and emptied again when dropped.
pub struct StepDir<'a> {
    space: &'a ScratchSpace,
    path: PathBuf,
}

impl StepDir<'_> {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StepDir<'_> {
    fn drop(&mut self) {
        self.space.steps.give_back(self.path.clone(), kept_output);
    }
}

/// What a step left in its directory is untrusted: a plain `output` file (not a link of
/// either kind) is truncated and kept for the next step; anything else is removed, never
/// followed.
fn kept_output(path: &Path, meta: &std::fs::Metadata) -> bool {
    let truncated = || -> io::Result<bool> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)?;
        let opened = file.metadata()?;
        if opened.ino() == meta.ino() && opened.dev() == meta.dev() && opened.nlink() == 1 {
            file.set_len(0)?;
            return Ok(true);
        }
        Ok(false)
    };
    path.file_name() == Some(std::ffi::OsStr::new(OUTPUT))
        && meta.file_type().is_file()
        && meta.nlink() == 1
        && truncated().unwrap_or(false)
}

impl ScratchSpace {
    /// Scratch space at `dir`, made when a step first needs it.
    pub fn new(dir: &Path) -> ScratchSpace {
        ScratchSpace {
            held: Arc::new(HeldDir::new(dir)),
            steps: DirPool::new(dir, "step"),
        }
    }

    /// Scratch space at `dir`, made now.
    pub fn create(dir: &Path) -> io::Result<ScratchSpace> {
        let space = ScratchSpace::new(dir);
        space.held.make()?;
        Ok(space)
    }

    /// The directory itself, for those who make theirs in it when they need to.
    pub fn held(&self) -> Arc<HeldDir> {
        self.held.clone()
    }

    /// Where the scratch space is, or will be once a step needs it.
    pub fn path(&self) -> &Path {
        self.held.path()
    }

    /// A directory for one step attempt, until the returned guard is dropped: empty, or
    /// holding only an empty `output` file.
    pub fn step_dir(&self) -> io::Result<StepDir<'_>> {
        self.held.make()?;
        Ok(StepDir {
            space: self,
            path: self.steps.take()?,
        })
    }

    /// A fresh, empty directory of this name, made in the scratch directory's own handle
    /// and left in place until the space goes. `name` is one plain component: a replay
    /// names directories after what a run folder says, and a folder may say `../..`.
    pub fn named(&self, name: &str) -> io::Result<PathBuf> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a plain directory name", name.escape_debug()),
            ));
        }
        let here = rustix::fs::open(
            self.held.make()?,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let dir = self.path().join(name);
        // A link of that name is removed, never followed.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        rustix::fs::mkdirat(&here, name, rustix::fs::Mode::from_raw_mode(0o755))?;
        Ok(dir)
    }

    /// Remove the scratch spaces among `candidates` whose run is gone; those of live runs
    /// (their lock is held) stay.
    pub fn sweep(candidates: impl IntoIterator<Item = PathBuf>) {
        held::sweep(candidates)
    }
}

/// Where the runs of a workspace keep their scratch spaces (`.wharf/scratch`): one
/// directory, so that the sweep at a run's start is one read of it.
pub fn scratch_root(workspace: &Path) -> PathBuf {
    workspace.join(crate::pipeline::grants::RESERVED).join("scratch")
}

/// The scratch spaces of the runs of `workspace`, live or left by killed runs.
pub fn run_scratches(workspace: &Path) -> impl Iterator<Item = PathBuf> + use<> {
    held::entries(&scratch_root(workspace))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's scratch space is made when a step first asks for a directory, in the
    /// workspace's one scratch folder; a killed run's is swept, a live one's stays, and it
    /// goes when its run ends.
    #[test]
    fn scratch_is_made_when_needed_and_a_dead_runs_is_swept() {
        let ws = tempfile::tempdir().unwrap();
        let live = ScratchSpace::new(&scratch_root(ws.path()).join("a"));
        assert!(!live.path().exists(), "made only when needed");
        let step = live.step_dir().unwrap();
        std::fs::write(step.path().join("f"), "x").unwrap();
        // A killed run: its lock file is there, nobody holds it.
        let dead = scratch_root(ws.path()).join("b");
        std::fs::create_dir_all(dead.join("step-1")).unwrap();
        std::fs::write(dead.join(".lock"), "").unwrap();
        ScratchSpace::sweep(run_scratches(ws.path()));
        assert!(!dead.exists());
        assert!(step.path().join("f").exists());
        drop(step);
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }

    /// A named directory is one component made in the scratch directory: a name that walks
    /// out is refused, and a link planted under the name is replaced, not followed.
    #[test]
    fn a_named_directory_stays_inside() {
        let runs = tempfile::tempdir().unwrap();
        let space = ScratchSpace::create(&runs.path().join("a/scratch")).unwrap();
        for name in ["../escaped", "..", "a/b", ""] {
            let e = space.named(name).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}");
        }
        assert!(!runs.path().join("a/escaped").exists());
        let outside = runs.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, space.path().join("w-1")).unwrap();
        let made = space.named("w-1").unwrap();
        assert!(std::fs::symlink_metadata(&made).unwrap().is_dir());
        assert!(outside.exists());
    }

    /// A step directory comes back empty but for a truncated plain `output`; what a step
    /// planted there (a symlink or a hard link named `output`, a directory) is removed, and
    /// the files it points at are untouched.
    #[test]
    fn a_step_directory_is_emptied_without_following_what_the_step_left() {
        let runs = tempfile::tempdir().unwrap();
        let outside = runs.path().join("victim");
        std::fs::write(&outside, "keep me").unwrap();
        let space = ScratchSpace::create(&runs.path().join("a/scratch")).unwrap();
        let plants: [&dyn Fn(&Path); 4] = [
            &|dir| std::os::unix::fs::symlink(&outside, dir.join(OUTPUT)).unwrap(),
            &|dir| std::fs::hard_link(&outside, dir.join(OUTPUT)).unwrap(),
            &|dir| std::fs::create_dir_all(dir.join(OUTPUT).join("deep")).unwrap(),
            &|dir| {
                std::fs::write(dir.join(OUTPUT), "a=1").unwrap();
                std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
                std::fs::create_dir(dir.join("sub")).unwrap();
            },
        ];
        let mut first = None;
        for plant in plants {
            let step = space.step_dir().unwrap();
            let path = step.path().to_path_buf();
            first.get_or_insert_with(|| path.clone());
            plant(&path);
            drop(step);
            assert_eq!(first.as_ref(), Some(&path), "the directory is reused");
            let left: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty() || left == [OUTPUT], "{left:?}");
            if let Ok(meta) = std::fs::symlink_metadata(path.join(OUTPUT)) {
                assert!(meta.is_file() && meta.len() == 0 && meta.nlink() == 1);
            }
            assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
        }
    }
}
