//! Links the kernel's own libpq: `SPOCKCTRL_PG_CONFIG` (set by `cargo xtask`) or `PG_CONFIG`
//! names the kernel's `pg_config`, else the one on `PATH`. The run path is the kernel's libdir, or
//! `SPOCKCTRL_RPATH` (the installed libdir, for the packaged binary).

use std::process::Command;

fn main() {
    for var in ["SPOCKCTRL_PG_CONFIG", "PG_CONFIG", "SPOCKCTRL_RPATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let pg_config = std::env::var("SPOCKCTRL_PG_CONFIG")
        .or_else(|_| std::env::var("PG_CONFIG"))
        .unwrap_or_else(|_| "pg_config".into());
    let libdir = Command::new(&pg_config)
        .arg("--libdir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match libdir {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={dir}");
            let rpath = std::env::var("SPOCKCTRL_RPATH").unwrap_or(dir);
            println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");
        }
        // `cargo check`/`clippy` never link, so they work without a kernel; a real build then
        // fails at link time naming libpq.
        None => println!(
            "cargo:warning=no pg_config ({pg_config}); set SPOCKCTRL_PG_CONFIG to a kernel's pg_config"
        ),
    }
    println!("cargo:rustc-link-lib=dylib=pq");
}
