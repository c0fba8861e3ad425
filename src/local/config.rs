//! Reading a folder of YAML files into the objects `kfaas local` serves, with the same validation
//! the API server applies. Every problem names its file, document and object.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::Secret;

use crate::{
    api::{Function, UsagePlan},
    gateway::table::TableInput,
    objects::{KfaasObject, parse_documents, validate},
};

/// Everything found in the folder.
#[derive(Debug, Default, Clone)]
pub struct LocalConfig {
    pub table: TableInput,
    pub usage_plans: Vec<UsagePlan>,
    pub secrets: Vec<Secret>,
    /// The code folder of each runtime function, resolved against the file it was declared in.
    pub code_dirs: BTreeMap<String, PathBuf>,
    /// The YAML files read.
    pub files: Vec<PathBuf>,
}

/// A problem with one file or object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem(pub String);

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads every `*.yaml`/`*.yml` file under `dir` (recursively, in name order). Returns the good
/// objects and the problems; a bad object never hides the good ones.
pub fn load_dir(dir: &Path) -> (LocalConfig, Vec<ConfigProblem>) {
    let mut config = LocalConfig::default();
    let mut problems = Vec::new();
    let files = match yaml_files(dir) {
        Ok(files) => files,
        Err(e) => {
            problems.push(ConfigProblem(format!("{}: {e}", dir.display())));
            return (config, problems);
        }
    };
    if files.is_empty() {
        problems.push(ConfigProblem(format!(
            "{}: no .yaml files found",
            dir.display()
        )));
    }
    let mut seen = HashSet::new();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(ConfigProblem(format!(
                    "{}: cannot read: {e}",
                    file.display()
                )));
                continue;
            }
        };
        let base = file.parent().unwrap_or(dir);
        for document in parse_documents(file, &text) {
            let object = match document {
                Ok(doc) => match doc.object {
                    Some(object) => object,
                    None => continue,
                },
                Err(e) => {
                    problems.push(ConfigProblem(e.to_string()));
                    continue;
                }
            };
            if let Err(e) = validate(&object) {
                problems.push(ConfigProblem(format!("{}: {e}", file.display())));
                continue;
            }
            let label = object.describe();
            if !seen.insert(label.clone()) {
                problems.push(ConfigProblem(format!(
                    "{}: {label} is defined twice; the first one is kept",
                    file.display()
                )));
                continue;
            }
            match object {
                KfaasObject::Function(f) => match resolve_code(&f, base) {
                    Ok(code_dir) => {
                        if let Some(dir) = code_dir {
                            config.code_dirs.insert(name(&f.metadata).to_owned(), dir);
                        }
                        config.table.functions.push(f);
                    }
                    Err(message) => problems.push(ConfigProblem(format!(
                        "{}: {label}: {message}",
                        file.display()
                    ))),
                },
                KfaasObject::Route(r) => config.table.routes.push(with_namespace(r)),
                KfaasObject::Stage(s) => config.table.stages.push(with_namespace(s)),
                KfaasObject::UsagePlan(u) => config.usage_plans.push(with_namespace(u)),
                KfaasObject::Secret(s) => config.secrets.push(with_namespace(s)),
            }
        }
    }
    config.table.functions = config
        .table
        .functions
        .into_iter()
        .map(with_namespace)
        .collect();
    config.files = files;
    (config, problems)
}

fn name(meta: &kube::api::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// Local mode has one namespace: objects without one are in `default`.
fn with_namespace<K: kube::Resource>(mut object: K) -> K {
    if object.meta().namespace.is_none() {
        object.meta_mut().namespace = Some("default".into());
    }
    object
}

/// The code folder of a function, or why it cannot run on this machine.
fn resolve_code(function: &Function, base: &Path) -> Result<Option<PathBuf>, String> {
    if function.spec.image.is_some() {
        return Err("image functions need a cluster (kfaas local runs code, not containers): use runtime and code.path".into());
    }
    let Some(code) = &function.spec.code else {
        return Ok(None);
    };
    if let Some(path) = &code.path {
        let dir = base.join(path);
        if !dir.is_dir() {
            return Err(format!("code.path {} is not a folder", dir.display()));
        }
        return Ok(Some(dir.canonicalize().unwrap_or(dir)));
    }
    if let Some(files) = &code.inline {
        let dir = std::env::temp_dir()
            .join(format!("kfaas-{}", std::process::id()))
            .join(name(&function.metadata));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot write code.inline to {}: {e}", dir.display()))?;
        for (file, content) in files {
            if file.contains('/') || file.contains("..") {
                return Err(format!(
                    "code.inline file name {file:?} must be a plain file name"
                ));
            }
            std::fs::write(dir.join(file), content)
                .map_err(|e| format!("cannot write code.inline file {file}: {e}"))?;
        }
        return Ok(Some(dir));
    }
    Err("code.configMap needs a cluster; use code.path or code.inline with kfaas local".into())
}

fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') || n == "node_modules");
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_load_without_problems() {
        for example in ["hello", "shop", "echo-http"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(example);
            let (config, problems) = load_dir(&dir);
            assert!(problems.is_empty(), "{example}: {problems:?}");
            assert!(
                !config.table.functions.is_empty(),
                "{example}: no functions"
            );
            for f in &config.table.functions {
                assert!(
                    config.code_dirs.contains_key(name(&f.metadata)),
                    "{example}: code dir"
                );
            }
        }
    }

    #[test]
    fn a_bad_object_is_reported_with_its_file_and_the_rest_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("src")).expect("src");
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: kfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: ok}\nspec: {runtime: nodejs, handler: index.handler, code: {path: src}}\n---\napiVersion: kfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: bad}\nspec: {runtime: nodejs, handler: index.handler, code: {path: src}, timeoutSeconds: 0}\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("b.yaml"), "kind: [unclosed").expect("write");
        let (config, problems) = load_dir(dir.path());
        assert_eq!(config.table.functions.len(), 1);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|p| p.contains("a.yaml")
                && p.contains("Function/bad")
                && p.contains("timeoutSeconds must be within 1..900")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("b.yaml") && p.contains("not valid YAML")),
            "{text:?}"
        );
    }
}
