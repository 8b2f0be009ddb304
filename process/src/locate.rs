//! Where things are: the workspace, its binaries, the nats-server binary, and
//! free loopback ports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The workspace this crate was built in (where `.tools/`, `nats/config/` and
/// `benches/baselines/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The directory of the workspace's binaries, from where this program runs:
/// its own directory (`target/<profile>` for `shop`, `shop-bench`), or the
/// parent of `deps` for a test binary (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this program")?;
    let dir = exe.parent().context("this program has no directory")?;
    Ok(if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

/// The nats-server binary: `NATS_SERVER_BIN`, else `<root>/.tools/bin/nats-server`
/// (installed by scripts/setup.sh), else `nats-server` on PATH.
pub fn nats_server_bin(root: &Path) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let local = root.join(".tools/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    match on_path {
        Some(bin) => Ok(bin),
        None => bail!(
            "no nats-server found (NATS_SERVER_BIN, .tools/bin or PATH): run scripts/setup.sh"
        ),
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; taken by whoever binds first).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_workspace_and_ports() {
        assert!(workspace_root().join("process/Cargo.toml").is_file());
        assert_ne!(free_port().unwrap(), 0);
        // A test binary runs from target/<profile>/deps; its binaries are one up.
        assert_ne!(bin_dir().unwrap().file_name().unwrap(), "deps");
    }
}
