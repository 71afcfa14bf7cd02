//! A standalone rumqttd broker on 127.0.0.1:PORT, for tests that kill and restart the
//! broker as a real process (`test_broker PORT`). Not part of the agent.

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: test_broker PORT");
            std::process::exit(2);
        });
    let cfg = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 200
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&cfg).expect("broker config");
    let mut broker = rumqttd::Broker::new(config);
    println!("listening 127.0.0.1:{port}");
    if let Err(e) = broker.start() {
        eprintln!("broker stopped: {e}");
        std::process::exit(1);
    }
}
