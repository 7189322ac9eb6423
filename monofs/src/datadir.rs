//! Where `monofs up` keeps its data when not told: `$MONOFS_DATA_DIR`, else
//! `$XDG_DATA_HOME/monofs`, else `~/.local/share/monofs`.

use std::path::PathBuf;

pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MONOFS_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("monofs");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    home.join(".local/share/monofs")
}
