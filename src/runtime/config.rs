//! What one `kfaas runtime` runs, validated once at start-up.
//!
//! Configuration problems (a missing code folder, an unknown handler file, a bootstrap that is
//! not executable, no command at all) are found here, before anything is bound or spawned, so a
//! misconfigured instance fails at once with a clear message instead of hanging.

use std::{
    ffi::OsString,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

/// The image path of the language bootstraps; used when no checkout is found near the binary.
pub const IMAGE_RUNTIMES_DIR: &str = "/opt/kfaas/runtimes";

/// A Lambda runtime, named as AWS names them (without the version suffix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// `runtimes/nodejs/bootstrap.js` run by `node` from `PATH`.
    Nodejs,
    /// `runtimes/python/bootstrap.py` run by `python3` from `PATH`.
    Python,
    /// The code folder's own executable `bootstrap` (Go, Rust, anything), as `provided.al2023`.
    Provided,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nodejs => "nodejs",
            Self::Python => "python",
            Self::Provided => "provided",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeKind {
    type Err = ConfigError;

    /// Accepts AWS's versioned names too (`nodejs20.x`, `python3.12`, `provided.al2023`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s.starts_with("nodejs") || s == "node" {
            Ok(Self::Nodejs)
        } else if s.starts_with("python") {
            Ok(Self::Python)
        } else if s.starts_with("provided") {
            Ok(Self::Provided)
        } else {
            Err(ConfigError::UnknownRuntime(s))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown runtime {0:?} (expected nodejs, python or provided)")]
    UnknownRuntime(String),
    #[error("code folder {0} does not exist or is not a folder")]
    CodeDirMissing(PathBuf),
    #[error("runtime {0} needs --handler FILE.EXPORT")]
    HandlerMissing(RuntimeKind),
    #[error("malformed handler {0:?}: expected FILE.EXPORT, e.g. index.handler")]
    MalformedHandler(String),
    #[error("handler file for {handler:?} not found in {dir} (looked for {tried})")]
    HandlerFileNotFound {
        handler: String,
        dir: PathBuf,
        tried: String,
    },
    #[error("{0} is missing: a provided-runtime function ships an executable named bootstrap")]
    BootstrapMissing(PathBuf),
    #[error("{0} is not executable (chmod +x it)")]
    NotExecutable(PathBuf),
    #[error(
        "no runtimes folder with {kind}/ found (looked in {searched}); pass --runtimes-dir or KFAAS_RUNTIMES_DIR"
    )]
    RuntimesDirNotFound { kind: RuntimeKind, searched: String },
    #[error("command {0:?} not found on PATH")]
    CommandNotFound(String),
    #[error("nothing to run: pass --runtime or a command after --")]
    NoCommand,
    #[error("--external serves a handler started by someone else: it takes no command")]
    ExternalWithCommand,
    #[error("bad --env {0:?}: expected KEY=VALUE")]
    BadEnv(String),
    #[error("--concurrency must be between 1 and 1024, got {0}")]
    Concurrency(u32),
    #[error("--timeout-seconds must be between 1 and 900, got {0}")]
    Timeout(u32),
}

impl ConfigError {
    /// A short stable category for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownRuntime(_) => "unknown_runtime",
            Self::CodeDirMissing(_) => "code_dir_missing",
            Self::HandlerMissing(_) | Self::MalformedHandler(_) => "bad_handler",
            Self::HandlerFileNotFound { .. } => "handler_file_not_found",
            Self::BootstrapMissing(_) | Self::NotExecutable(_) => "bad_bootstrap",
            Self::RuntimesDirNotFound { .. } => "runtimes_dir_not_found",
            Self::CommandNotFound(_) | Self::NoCommand | Self::ExternalWithCommand => "bad_command",
            Self::BadEnv(_) => "bad_env",
            Self::Concurrency(_) | Self::Timeout(_) => "out_of_range",
        }
    }
}

/// The options as the command line gives them, before validation.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    pub listen: Option<SocketAddr>,
    pub runtime: Option<RuntimeKind>,
    pub code_dir: PathBuf,
    pub handler: Option<String>,
    pub function_name: String,
    pub memory_mb: u32,
    pub timeout_seconds: u32,
    /// How long a handler process may take to initialise (Lambda allows 10 s).
    pub init_timeout_seconds: u32,
    pub concurrency: u32,
    pub env: Vec<String>,
    /// `Some(addr)`: sidecar mode, serve the Runtime API there and spawn nothing.
    pub external: Option<SocketAddr>,
    pub runtimes_dir: Option<PathBuf>,
    pub command: Vec<String>,
}

/// How handler processes come to exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerMode {
    /// Spawn `concurrency` copies of this command, each with its own Runtime API address.
    Spawn { command: Vec<String> },
    /// A handler started by someone else polls the Runtime API on this address.
    External { runtime_api: SocketAddr },
}

/// A validated configuration: everything `kfaas runtime` needs to start.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub listen: SocketAddr,
    pub mode: HandlerMode,
    pub runtime: Option<RuntimeKind>,
    pub code_dir: PathBuf,
    pub handler: String,
    pub function_name: String,
    pub memory_mb: u32,
    pub timeout: Duration,
    pub init_timeout: Duration,
    pub concurrency: u32,
    /// The user's variables (`--env`), applied over the Lambda ones.
    pub user_env: Vec<(String, String)>,
    /// `LAMBDA_RUNTIME_DIR`: the bootstrap's folder, when a language runtime is used.
    pub runtime_dir: Option<PathBuf>,
    pub region: String,
    /// Where the runtime's own lines go. Not a flag: `kfaas local`, which runs runtimes in its
    /// own process, sets it.
    pub output: super::report::Output,
    /// How handler processes are started. Not a flag either: `kfaas runtime`'s handlers inherit
    /// its stdout, stderr and environment; `kfaas local` gives them its own.
    pub handler_process: HandlerProcess,
}

/// How handler processes are started, beyond their command.
#[derive(Clone, Debug, Default)]
pub struct HandlerProcess {
    /// Their stdout and stderr; `None`: this process's.
    pub stdio: Option<(Arc<std::fs::File>, Arc<std::fs::File>)>,
    /// The environment under the Lambda variables; `None`: this process's, without `KFAAS_*`.
    pub base_env: Option<Vec<(OsString, OsString)>>,
    /// In a session of their own (see `local::instance_process`), not only a process group.
    pub own_session: bool,
}

impl RuntimeConfig {
    /// Validates the options; `exe` is the running binary, used to find the runtimes folder.
    pub fn resolve(opts: RuntimeOptions, exe: Option<&Path>) -> Result<Self, ConfigError> {
        if !(1..=1024).contains(&opts.concurrency) {
            return Err(ConfigError::Concurrency(opts.concurrency));
        }
        if !(1..=900).contains(&opts.timeout_seconds) {
            return Err(ConfigError::Timeout(opts.timeout_seconds));
        }
        let user_env = opts
            .env
            .iter()
            .map(|kv| parse_env(kv))
            .collect::<Result<Vec<_>, _>>()?;
        let code_dir = absolute(&opts.code_dir);
        let handler = opts.handler.clone().unwrap_or_default();
        let (mode, runtime_dir) = if let Some(runtime_api) = opts.external {
            if !opts.command.is_empty() {
                return Err(ConfigError::ExternalWithCommand);
            }
            (HandlerMode::External { runtime_api }, None)
        } else {
            if !code_dir.is_dir() {
                return Err(ConfigError::CodeDirMissing(code_dir));
            }
            let (command, runtime_dir) = handler_command(&opts, &code_dir, exe)?;
            check_command(&command, &code_dir)?;
            (HandlerMode::Spawn { command }, runtime_dir)
        };
        Ok(Self {
            listen: opts.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            mode,
            runtime: opts.runtime,
            code_dir,
            handler,
            function_name: opts.function_name,
            memory_mb: opts.memory_mb,
            timeout: Duration::from_secs(u64::from(opts.timeout_seconds)),
            init_timeout: Duration::from_secs(u64::from(opts.init_timeout_seconds.max(1))),
            concurrency: if opts.external.is_some() {
                1
            } else {
                opts.concurrency
            },
            user_env,
            runtime_dir,
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned()),
            output: super::report::Output::Stdout,
            handler_process: HandlerProcess::default(),
        })
    }

    /// The ARN handlers see as `invokedFunctionArn`.
    pub fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.region, self.function_name
        )
    }

    /// The environment a handler process gets on top of the runtime's own (minus `KFAAS_*`).
    pub fn lambda_env(&self, runtime_api: SocketAddr) -> Vec<(String, String)> {
        let execution_env = match self.runtime {
            Some(kind) => format!("AWS_Lambda_{kind}"),
            None => "AWS_Lambda_provided".to_owned(),
        };
        let stream = format!(
            "{}/[$LATEST]{}",
            chrono::Utc::now().format("%Y/%m/%d"),
            uuid::Uuid::new_v4().simple()
        );
        let mut env: Vec<(String, String)> = vec![
            ("AWS_LAMBDA_RUNTIME_API".into(), runtime_api.to_string()),
            ("_HANDLER".into(), self.handler.clone()),
            (
                "LAMBDA_TASK_ROOT".into(),
                self.code_dir.display().to_string(),
            ),
            (
                "AWS_LAMBDA_FUNCTION_NAME".into(),
                self.function_name.clone(),
            ),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
                self.memory_mb.to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
            (
                "AWS_LAMBDA_FUNCTION_TIMEOUT".into(),
                self.timeout.as_secs().to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".into(),
                format!("/aws/lambda/{}", self.function_name),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME".into(), stream),
            ("AWS_REGION".into(), self.region.clone()),
            ("AWS_DEFAULT_REGION".into(), self.region.clone()),
            ("AWS_EXECUTION_ENV".into(), execution_env),
            ("TZ".into(), "UTC".into()),
        ];
        if let Some(dir) = &self.runtime_dir {
            env.push(("LAMBDA_RUNTIME_DIR".into(), dir.display().to_string()));
        }
        if self.runtime == Some(RuntimeKind::Python) {
            // Handler output must reach the log as it is written, not when a buffer fills.
            env.push(("PYTHONUNBUFFERED".into(), "1".into()));
        }
        for (k, v) in &self.user_env {
            if k != "AWS_LAMBDA_RUNTIME_API" {
                env.push((k.clone(), v.clone()));
            }
        }
        env
    }
}

fn parse_env(kv: &str) -> Result<(String, String), ConfigError> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(ConfigError::BadEnv(kv.to_owned())),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The handler command and `LAMBDA_RUNTIME_DIR`: the `--` command when given, else the runtime's.
fn handler_command(
    opts: &RuntimeOptions,
    code_dir: &Path,
    exe: Option<&Path>,
) -> Result<(Vec<String>, Option<PathBuf>), ConfigError> {
    if !opts.command.is_empty() {
        return Ok((opts.command.clone(), None));
    }
    let Some(kind) = opts.runtime else {
        return Err(ConfigError::NoCommand);
    };
    match kind {
        RuntimeKind::Provided => {
            let bootstrap = code_dir.join("bootstrap");
            if !bootstrap.is_file() {
                return Err(ConfigError::BootstrapMissing(bootstrap));
            }
            Ok((vec![bootstrap.display().to_string()], None))
        }
        RuntimeKind::Nodejs | RuntimeKind::Python => {
            let handler = opts
                .handler
                .as_deref()
                .filter(|h| !h.is_empty())
                .ok_or(ConfigError::HandlerMissing(kind))?;
            check_handler_file(kind, handler, code_dir)?;
            let dir = find_runtimes_dir(kind, opts.runtimes_dir.as_deref(), exe)?;
            let (interpreter, script) = match kind {
                RuntimeKind::Nodejs => ("node", "bootstrap.js"),
                _ => ("python3", "bootstrap.py"),
            };
            let runtime_dir = dir.join(kind.as_str());
            let script = runtime_dir.join(script).display().to_string();
            let mut command = vec![interpreter.to_owned()];
            if kind == RuntimeKind::Nodejs {
                // As AWS's Node.js runtime does: the heap fits the configured memory, so a
                // function that would run out of memory on Lambda runs out here too.
                let heap = (u64::from(opts.memory_mb) * 9 / 10).max(64);
                command.push(format!("--max-old-space-size={heap}"));
            }
            command.push(script);
            Ok((command, Some(runtime_dir)))
        }
    }
}

/// Fails early when the handler's file is not in the code folder (AWS reports this only at the
/// first invocation, as `Runtime.ImportModuleError`; a supervisor can say it before starting).
fn check_handler_file(
    kind: RuntimeKind,
    handler: &str,
    code_dir: &Path,
) -> Result<(), ConfigError> {
    let candidates = handler_file_candidates(kind, handler)
        .ok_or_else(|| ConfigError::MalformedHandler(handler.to_owned()))?;
    if candidates.iter().any(|c| code_dir.join(c).is_file()) {
        return Ok(());
    }
    Err(ConfigError::HandlerFileNotFound {
        handler: handler.to_owned(),
        dir: code_dir.to_path_buf(),
        tried: candidates.join(", "),
    })
}

/// The files a handler string may name, relative to the code folder, in the order the
/// bootstraps try them.
pub fn handler_file_candidates(kind: RuntimeKind, handler: &str) -> Option<Vec<String>> {
    match kind {
        // `dir/file.export[.nested]`: the module is everything before the first dot of the
        // last path segment, as AWS's Node.js runtime splits it.
        RuntimeKind::Nodejs => {
            let (dir, last) = match handler.rsplit_once('/') {
                Some((d, l)) => (format!("{d}/"), l),
                None => (String::new(), handler),
            };
            let (module, export) = last.split_once('.')?;
            if module.is_empty() || export.is_empty() {
                return None;
            }
            Some(
                ["js", "mjs", "cjs"]
                    .iter()
                    .map(|ext| format!("{dir}{module}.{ext}"))
                    .collect(),
            )
        }
        // `pkg.module.function` or `dir/module.function`: the function is after the last dot.
        RuntimeKind::Python => {
            let (module, function) = handler.rsplit_once('.')?;
            if module.is_empty() || function.is_empty() {
                return None;
            }
            let path = module.replace('.', "/");
            Some(vec![format!("{path}.py"), format!("{path}/__init__.py")])
        }
        RuntimeKind::Provided => Some(vec!["bootstrap".to_owned()]),
    }
}

/// Finds the runtimes folder: the flag (or `KFAAS_RUNTIMES_DIR`), else a `runtimes/` folder in
/// a checkout that contains the running binary (so `target/debug/kfaas` finds the repo's), else
/// one above the working directory (a target dir outside the checkout; the local manager starts
/// runtimes in the function's code folder), else the image's `/opt/kfaas/runtimes`.
pub fn find_runtimes_dir(
    kind: RuntimeKind,
    flag: Option<&Path>,
    exe: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    let has = |dir: &Path| dir.join(kind.as_str()).is_dir();
    let mut searched = Vec::new();
    if let Some(dir) = flag {
        if has(dir) {
            return Ok(absolute(dir));
        }
        searched.push(dir.display().to_string());
        return Err(ConfigError::RuntimesDirNotFound {
            kind,
            searched: searched.join(", "),
        });
    }
    let exe = exe.map(|e| e.canonicalize().unwrap_or_else(|_| e.to_path_buf()));
    let cwd = std::env::current_dir().ok();
    for start in [exe.as_deref(), cwd.as_deref()].into_iter().flatten() {
        for ancestor in start.ancestors() {
            let candidate = ancestor.join("runtimes");
            if has(&candidate) {
                return Ok(candidate);
            }
        }
        searched.push(format!("runtimes/ above {}", start.display()));
    }
    let image = PathBuf::from(IMAGE_RUNTIMES_DIR);
    if has(&image) {
        return Ok(image);
    }
    searched.push(IMAGE_RUNTIMES_DIR.to_owned());
    Err(ConfigError::RuntimesDirNotFound {
        kind,
        searched: searched.join(", "),
    })
}

/// The command's program must exist: a path is checked as is (relative to the code folder),
/// a bare name is looked up on `PATH`.
fn check_command(command: &[String], code_dir: &Path) -> Result<(), ConfigError> {
    let program = command.first().ok_or(ConfigError::NoCommand)?;
    if program.contains('/') {
        let path = code_dir.join(program);
        if !path.is_file() {
            return Err(ConfigError::BootstrapMissing(path));
        }
        if !is_executable(&path) {
            return Err(ConfigError::NotExecutable(path));
        }
        return Ok(());
    }
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                let p = dir.join(program);
                p.is_file() && is_executable(&p)
            })
        })
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(ConfigError::CommandNotFound(program.clone()))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_accept_aws_versions() {
        assert_eq!(
            "nodejs20.x".parse::<RuntimeKind>().ok(),
            Some(RuntimeKind::Nodejs)
        );
        assert_eq!(
            "python3.12".parse::<RuntimeKind>().ok(),
            Some(RuntimeKind::Python)
        );
        assert_eq!(
            "provided.al2023".parse::<RuntimeKind>().ok(),
            Some(RuntimeKind::Provided)
        );
        assert!("java21".parse::<RuntimeKind>().is_err());
    }

    #[test]
    fn handler_candidates_follow_each_runtime() {
        assert_eq!(
            handler_file_candidates(RuntimeKind::Nodejs, "src/app.handler.main"),
            Some(vec![
                "src/app.js".into(),
                "src/app.mjs".into(),
                "src/app.cjs".into()
            ])
        );
        assert_eq!(
            handler_file_candidates(RuntimeKind::Python, "pkg.mod.handler"),
            Some(vec!["pkg/mod.py".into(), "pkg/mod/__init__.py".into()])
        );
        assert_eq!(handler_file_candidates(RuntimeKind::Nodejs, "index"), None);
        assert_eq!(handler_file_candidates(RuntimeKind::Python, ".x"), None);
    }

    #[test]
    fn env_needs_a_key() {
        assert!(parse_env("A=b=c").is_ok_and(|(k, v)| k == "A" && v == "b=c"));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn node_heap_follows_the_memory_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("runtimes/nodejs")).expect("runtimes");
        std::fs::write(dir.path().join("index.js"), "").expect("handler file");
        let opts = RuntimeOptions {
            runtime: Some(RuntimeKind::Nodejs),
            code_dir: dir.path().to_path_buf(),
            handler: Some("index.handler".into()),
            function_name: "f".into(),
            memory_mb: 256,
            timeout_seconds: 3,
            init_timeout_seconds: 10,
            concurrency: 1,
            runtimes_dir: Some(dir.path().join("runtimes")),
            ..Default::default()
        };
        let config = RuntimeConfig::resolve(opts, None).expect("valid");
        let HandlerMode::Spawn { command } = config.mode else {
            panic!("spawn mode expected");
        };
        assert_eq!(command[0], "node");
        assert_eq!(command[1], "--max-old-space-size=230");
        assert!(command[2].ends_with("runtimes/nodejs/bootstrap.js"));
    }

    #[test]
    fn missing_handler_file_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = RuntimeOptions {
            runtime: Some(RuntimeKind::Nodejs),
            code_dir: dir.path().to_path_buf(),
            handler: Some("index.handler".into()),
            function_name: "f".into(),
            memory_mb: 128,
            timeout_seconds: 3,
            init_timeout_seconds: 10,
            concurrency: 1,
            ..Default::default()
        };
        let err = RuntimeConfig::resolve(opts, None).expect_err("no index.js");
        assert_eq!(err.category(), "handler_file_not_found");
    }
}
