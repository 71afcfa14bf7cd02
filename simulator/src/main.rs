//! `outpost-sim`: thin binary over the simulator library.
fn main() {
    eprintln!("outpost-sim: the fleet demo is not built yet");
    std::process::exit(2);
}
