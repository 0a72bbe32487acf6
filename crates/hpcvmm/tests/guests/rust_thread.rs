// Rust std::thread with Arc<Mutex>, channels, scoped threads, available_parallelism.
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread;

fn main() {
    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let c = Arc::clone(&counter);
            thread::spawn(move || {
                for _ in 0..1000 {
                    *c.lock().unwrap() += i;
                }
                i * 2
            })
        })
        .collect();
    let rets: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("counter={} rets={:?}", *counter.lock().unwrap(), rets);
    let (tx, rx) = mpsc::channel();
    for id in 0..3 {
        let tx = tx.clone();
        thread::spawn(move || {
            for k in 0..5 {
                tx.send(id * 10 + k).unwrap();
            }
        });
    }
    drop(tx);
    let mut got: Vec<i32> = rx.iter().collect();
    got.sort();
    println!("channel got {} sum={}", got.len(), got.iter().sum::<i32>());
    let data = vec![1u64; 100_000];
    let total: u64 = thread::scope(|s| {
        let hs: Vec<_> = data.chunks(25_000).map(|c| s.spawn(move || c.iter().sum::<u64>())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!("scoped total={total}");
    let rw = Arc::new(RwLock::new(vec![0u32; 4]));
    let hs: Vec<_> = (0..4)
        .map(|i| {
            let rw = Arc::clone(&rw);
            thread::spawn(move || rw.write().unwrap()[i] = i as u32 + 1)
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    println!("rwlock={:?}", rw.read().unwrap());
    let r = thread::spawn(|| panic!("expected panic in thread")).join();
    println!("panicking thread joined with error: {}", r.is_err());
    println!("available_parallelism>=1: {}", thread::available_parallelism().map(|n| n.get() >= 1).unwrap_or(false));
}
