//! Keys and signatures on the command line: `wharf key generate`, `wharf key show`, and
//! `wharf verify IMAGE --key PUB`, which checks an image's provenance and prints it.

use super::outcome::{CommandResult, Exit, Stop};
use crate::capabilities::secrets::SecretStore;
use crate::oci::reference::ImageRef;
use crate::oci::registry::Registry;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use wharf_sign::{KeyPair, PublicKey};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Write a new signing key pair: NAME.key (private) and NAME.pub (public)
    #[command(after_help = "Examples:
  wharf key generate keys/release        # keys/release.key and keys/release.pub

The private half goes to a secret store (CI: a masked variable such as
WHARF_SECRET_RELEASE_KEY) and is never committed; it is written readable by its owner only.
The public half is committed, and named in wharf.trust.yml or `require-provenance:`.
Keys are Ed25519, in PEM (PKCS#8, SubjectPublicKeyInfo), named by fingerprint.")]
    Generate {
        /// Where to write, without extension
        #[arg(default_value = "wharf")]
        name: PathBuf,
    },
    /// Print the fingerprint of a key file (private or public)
    #[command(after_help = "Examples:
  wharf key show keys/release.pub")]
    Show { file: PathBuf },
}

pub(super) fn key(command: KeyCommand) -> CommandResult {
    match command {
        KeyCommand::Generate { name } => {
            let pair = KeyPair::generate().map_err(Stop::failed)?;
            let (private, public) = pair.write(&name).map_err(Stop::invalid)?;
            outln!("{}", pair.public().fingerprint());
            outln!(
                "  {}  private: keep it in a secret store, never in the repository",
                private.display()
            );
            outln!(
                "  {}  public: commit it; name it in wharf.trust.yml or `require-provenance:`",
                public.display()
            );
            Ok(Exit::Success)
        }
        KeyCommand::Show { file } => {
            let key = match PublicKey::read(&file) {
                Ok(key) => key,
                Err(wharf_sign::KeyError::PrivateGiven { .. }) => {
                    KeyPair::read(&file).map_err(Stop::invalid)?.public().clone()
                }
                Err(e) => return Err(Stop::invalid(e)),
            };
            outln!("{}  {}", key.fingerprint(), file.display());
            Ok(Exit::Success)
        }
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The image: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST
    image: String,
    /// A public key whose provenance to accept (repeat for several)
    #[arg(long, value_name = "PUB", required = true)]
    key: Vec<PathBuf>,
}

/// `wharf verify`: the image's provenance, checked with the given keys alone, printed.
pub(super) async fn verify(args: VerifyArgs, secrets: &SecretStore) -> CommandResult {
    let keys = args
        .key
        .iter()
        .map(|path| PublicKey::read(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Stop::invalid)?;
    let image = ImageRef::parse(&args.image).map_err(|e| Stop::invalid(format!("`{}`: {e}", args.image)))?;
    let Some(host) = image.registry.as_deref() else {
        return Err(Stop::invalid(format!(
            "`{}` names no registry: write REGISTRY/REPOSITORY:TAG",
            args.image
        )));
    };
    let registry =
        Registry::new(host, super::packages::credentials(host, secrets)).map_err(|e| Stop::failed(e.to_string()))?;
    // A digest is the image; a tag is asked of the registry.
    let digest = match &image.digest {
        Some(digest) => digest.clone(),
        None => {
            let tag = image.tag.clone().unwrap_or_else(|| "latest".into());
            registry
                .manifest_digest(&image.repository, &tag)
                .await
                .map_err(|e| Stop::failed(e.to_string()))?
                .ok_or_else(|| Stop::failed(format!("{} does not exist", args.image)))?
        }
    };
    let store_dir = tempfile::tempdir().map_err(|e| Stop::failed(format!("a temporary directory: {e}")))?;
    let store = crate::oci::layout::Store::open(store_dir.path()).map_err(|e| Stop::failed(e.to_string()))?;
    let name = format!("{host}/{}@{digest}", image.repository);
    let verified = crate::provenance::find(&registry, &store, &image.repository, &digest, &name, &keys)
        .await
        .map_err(|e| Stop::failed(format!("{e}\n  = help: {}", e.help())))?;
    outln!("{name}: provenance verified, signed by {}", verified.signer);
    print_provenance(&verified.statement.predicate);
    Ok(Exit::Success)
}

fn print_provenance(predicate: &serde_json::Value) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let sha = |v: &serde_json::Value| format!("sha256:{}", text(&v["sha256"]));
    let run = &predicate["runDetails"];
    let build = &predicate["buildDefinition"];
    outln!(
        "  builder   {} {}",
        text(&run["builder"]["id"]),
        text(&run["builder"]["version"]["wharf"])
    );
    outln!(
        "  run       {} (started {})",
        text(&run["metadata"]["invocationId"]),
        text(&run["metadata"]["startedOn"])
    );
    let pipeline = &build["externalParameters"]["pipeline"];
    outln!("  pipeline  {} {}", text(&pipeline["path"]), sha(&pipeline["digest"]));
    for dependency in build["resolvedDependencies"].as_array().into_iter().flatten() {
        match dependency["digest"].get("gitCommit") {
            Some(commit) => outln!("  source    {}", text(commit)),
            None => outln!(
                "  step      {:<12} {} {}",
                text(&dependency["name"]).trim_start_matches("step:"),
                text(&dependency["uri"]),
                sha(&dependency["digest"])
            ),
        }
    }
    for byproduct in run["byproducts"].as_array().into_iter().flatten() {
        outln!(
            "  journal   {} ({} bytes of the run's {}; {})",
            sha(&byproduct["digest"]),
            byproduct["annotations"]["bytes"],
            text(&byproduct["name"]),
            text(&byproduct["annotations"]["recorded"])
        );
    }
}
