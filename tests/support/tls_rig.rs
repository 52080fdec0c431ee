//! TLS test rig: a private plaintext Tansu whose advertised listener is the
//! port of a Debian `stunnel4` terminator in front of it, so metadata sends
//! clients back through TLS. Certificates are made at test time with rcgen
//! into the rig's temp dir. Both processes are killed on drop.
//!
//! Needs `stunnel4` (scripts/test.sh installs it) and `TALLY_TANSU_BIN`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::wait_for;

/// A CA that signs the rig's certificates.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("CA cert").pem();
        TestCa { params, key, pem }
    }

    /// (certificate PEM, key PEM) for `names` (IP addresses or DNS names).
    pub fn issue(&self, names: &[&str], expired: bool) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("DNS name")),
            })
            .collect();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// What the terminator presents and demands.
pub struct RigOptions {
    /// Names on the server certificate.
    pub server_names: Vec<&'static str>,
    pub expired_server_cert: bool,
    /// Require a client certificate signed by the rig's CA (`verify = 2`).
    pub require_client_cert: bool,
    /// Start the broker with `--authentication` (SASL; its user store is a
    /// no-op, so every login is refused — the rejection path over TLS).
    pub sasl: bool,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            server_names: vec!["127.0.0.1", "localhost"],
            expired_server_cert: false,
            require_client_cert: false,
            sasl: false,
        }
    }
}

pub struct TlsRig {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    /// `127.0.0.1:PORT` of the terminator (what clients bootstrap from).
    pub tls_addr: String,
    /// The broker's own plaintext port (for `tansu topic create`).
    pub plain_addr: String,
    server_names: Vec<&'static str>,
    // Field order: the terminator goes first, then the broker.
    stunnel: KillOnDrop,
    _tansu: KillOnDrop,
}

/// Killed and reaped on drop, also when a later step of `start` panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_stunnel(conf: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(stunnel_bin())
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel4"),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn tansu_bin() -> String {
    std::env::var("TALLY_TANSU_BIN").expect("TALLY_TANSU_BIN is not set: run scripts/test.sh")
}

pub fn stunnel_bin() -> &'static str {
    for b in ["/usr/bin/stunnel4", "/usr/bin/stunnel"] {
        if Path::new(b).exists() {
            return b;
        }
    }
    panic!(
        "stunnel4 is not installed: run scripts/test.sh (it installs it) or apt-get install stunnel4"
    )
}

impl TlsRig {
    pub fn start(opts: RigOptions) -> TlsRig {
        let tansu_bin = tansu_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("tally test CA");
        let (cert, key) = ca.issue(&opts.server_names, opts.expired_server_cert);
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write rig file");
            p
        };
        let ca_path = write("ca.pem", &ca.pem);
        let cert_path = write("server.pem", &cert);
        let key_path = write("server.key", &key);

        let (tls_port, plain_port) = (free_port(), free_port());
        let tls_addr = format!("127.0.0.1:{tls_port}");
        let plain_addr = format!("127.0.0.1:{plain_port}");
        let verify = if opts.require_client_cert {
            format!("verify = 2\nCAfile = {}\n", ca_path.display())
        } else {
            String::new()
        };
        let conf = write(
            "stunnel.conf",
            &format!(
                "foreground = yes\npid =\noutput = {log}\ndebug = 5\n\n[kafka]\naccept = {tls_addr}\nconnect = {plain_addr}\ncert = {cert}\nkey = {key}\n{verify}",
                log = dir.path().join("stunnel.log").display(),
                cert = cert_path.display(),
                key = key_path.display(),
            ),
        );
        let stunnel = spawn_stunnel(&conf);
        let tansu = KillOnDrop(
            Command::new(&tansu_bin)
                .args([
                    "broker",
                    "--cluster-id",
                    "tally-tls",
                    "--listener-url",
                    &format!("tcp://{plain_addr}"),
                    "--advertised-listener-url",
                    &format!("tcp://{tls_addr}"),
                    "--storage-engine",
                    "memory://tansu/",
                ])
                .args(opts.sasl.then_some("--authentication"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tansu"),
        );
        let rig = TlsRig {
            dir,
            ca,
            tls_addr,
            plain_addr,
            server_names: opts.server_names.clone(),
            stunnel,
            _tansu: tansu,
        };
        for addr in [&rig.plain_addr, &rig.tls_addr] {
            wait_for(
                &format!("{addr} to accept"),
                Duration::from_secs(30),
                || TcpStream::connect(addr).is_ok(),
            );
        }
        rig
    }

    /// Stops the terminator (cutting every client connection) and starts it
    /// again on the same port with a new server certificate from the same
    /// CA — expired when asked: the broker's certificate changed under
    /// running clients.
    pub fn restart_terminator(&mut self, expired_server_cert: bool) {
        let _ = self.stunnel.0.kill();
        let _ = self.stunnel.0.wait();
        let (cert, key) = self.ca.issue(&self.server_names, expired_server_cert);
        std::fs::write(self.path("server.pem"), cert).expect("write server cert");
        std::fs::write(self.path("server.key"), key).expect("write server key");
        self.stunnel = spawn_stunnel(&self.path("stunnel.conf"));
        wait_for(
            &format!("{} to accept again", self.tls_addr),
            Duration::from_secs(30),
            || TcpStream::connect(&self.tls_addr).is_ok(),
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a client certificate + key issued by `ca` and returns their paths.
    pub fn client_identity(&self, ca: &TestCa, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = ca.issue(&["tally-client"], false);
        let c = self.path(&format!("{name}.pem"));
        let k = self.path(&format!("{name}.key"));
        std::fs::write(&c, cert).expect("write client cert");
        std::fs::write(&k, key).expect("write client key");
        (c, k)
    }

    /// Creates a topic through the broker's plaintext port.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &format!("tcp://{}", self.plain_addr),
            ])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn stunnel_log(&self) -> String {
        std::fs::read_to_string(self.path("stunnel.log")).unwrap_or_default()
    }
}
