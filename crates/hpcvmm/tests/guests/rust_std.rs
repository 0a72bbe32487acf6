// Rust std: collections, formatting, files, env, panics caught with catch_unwind, process::exit.
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args={args:?}");
    println!("env DS_X={:?}", std::env::var("DS_X").ok());
    let mut m: HashMap<u32, u64> = HashMap::new();
    for i in 0..10_000u32 {
        *m.entry(i % 97).or_default() += u64::from(i);
    }
    let sorted: BTreeMap<_, _> = m.iter().filter(|(k, _)| **k < 5).collect();
    println!("map={sorted:?} len={}", m.len());
    let v: Vec<f64> = (1..=1000).map(|i| (i as f64).sqrt()).collect();
    println!("sum of roots={:.6}", v.iter().sum::<f64>());
    let s = format!("{:>8}|{:<8}|{:^8}|{:08.3}|{:x}", "r", "l", "c", 3.14159, 48879);
    println!("{s}");
    std::fs::create_dir_all("rs_dir/sub").unwrap();
    {
        let mut f = std::fs::File::create("rs_dir/sub/f.txt").unwrap();
        writeln!(f, "written by rust").unwrap();
    }
    let mut text = String::new();
    std::fs::File::open("rs_dir/sub/f.txt").unwrap().read_to_string(&mut text).unwrap();
    print!("read back: {text}");
    let meta = std::fs::metadata("rs_dir/sub/f.txt").unwrap();
    println!("len={} is_file={}", meta.len(), meta.is_file());
    let mut names: Vec<String> = std::fs::read_dir("rs_dir").unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    println!("dir={names:?}");
    std::fs::remove_dir_all("rs_dir").unwrap();
    println!("exists after remove={}", std::path::Path::new("rs_dir").exists());
    println!("missing file error={:?}", std::fs::read("no/such/file").unwrap_err().kind());
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| {
        let v: Vec<i32> = Vec::new();
        v[3]
    });
    println!("caught panic={}", r.is_err());
    let t = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(10));
    println!("slept>=10ms={}", t.elapsed().as_millis() >= 10);
    let big: Vec<u8> = vec![7; 64 << 20];
    println!("big vec sum={}", big.iter().map(|&b| u64::from(b)).sum::<u64>());
    std::io::stdout().flush().unwrap();
    std::process::exit(if args.is_empty() { 0 } else { 5 });
}
