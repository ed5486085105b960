//! Which kernels this test run covers (`cargo xtask test` exports them).

pub fn majors() -> Vec<u32> {
    let list = std::env::var("PGEDGE_TEST_MAJORS")
        .expect("run the suite through `cargo xtask test`, which builds the kernels it needs");
    list.split(',')
        .map(|m| m.trim().parse().expect("a major version"))
        .collect()
}

/// Runs `f` for every staged kernel of this test run.
pub fn for_each_kernel(mut f: impl FnMut(&harness::Kernel)) {
    for major in majors() {
        let kernel = harness::Kernel::staged(major).unwrap();
        assert_eq!(
            kernel.major, major,
            "PGEDGE_PG_CONFIG_{major} points at another major"
        );
        f(&kernel);
    }
}
