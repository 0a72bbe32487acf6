//! Minimal runner for VMM development: `vmrun [--lazy] PROGRAM [ARGS]...`.
fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let lazy = args.first().is_some_and(|a| a == "--lazy");
    if lazy {
        args.remove(0);
    }
    let mut cfg = dualstack_hpcvmm::RunConfig::new(&args[0], args.clone());
    if lazy {
        cfg.backing = dualstack_hpcvmm::Backing::Lazy;
    }
    cfg.env = vec!["HOME=/root".into()];
    let stats = dualstack_hpcvmm::run(&cfg).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    if let dualstack_hpcvmm::ExitReport::Faulted(f) = &stats.exit {
        eprintln!("fault: {f:?}");
    }
    eprintln!("{}", stats.summary());
    std::fs::write(
        "/tmp/vmrun-stats.json",
        serde_json::to_string_pretty(&stats).unwrap(),
    )
    .unwrap();
    std::process::exit(stats.exit_status);
}
