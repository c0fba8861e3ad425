//! Reading a folder of YAML files into the objects `kfaas local` serves, with the same validation
//! the API server applies. Every problem names its file, document and object.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

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
    // Functions are resolved after every file is read: their code may be in a ConfigMap that
    // comes later.
    let mut functions: Vec<(Function, PathBuf, PathBuf, String)> = Vec::new();
    let mut config_maps: BTreeMap<String, ConfigMap> = BTreeMap::new();
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
                KfaasObject::Function(f) => {
                    functions.push((f, base.to_owned(), file.clone(), label));
                }
                KfaasObject::ConfigMap(c) => {
                    config_maps.insert(name(&c.metadata).to_owned(), c);
                }
                KfaasObject::Route(r) => config.table.routes.push(with_namespace(r)),
                KfaasObject::Stage(s) => config.table.stages.push(with_namespace(s)),
                KfaasObject::UsagePlan(u) => config.usage_plans.push(with_namespace(u)),
                KfaasObject::Secret(s) => config.secrets.push(with_namespace(s)),
            }
        }
    }
    for (f, base, file, label) in functions {
        match resolve_code(&f, &base, &config_maps) {
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
fn resolve_code(
    function: &Function,
    base: &Path,
    config_maps: &BTreeMap<String, ConfigMap>,
) -> Result<Option<PathBuf>, String> {
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
        let files = files.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
        return write_code(function, "code.inline", files).map(Some);
    }
    let Some(map_name) = &code.config_map else {
        return Ok(None);
    };
    // As on a cluster, the ConfigMap's keys are the files of the code folder.
    let Some(map) = config_maps.get(map_name) else {
        return Err(format!(
            "code.configMap {map_name:?} is not in this folder (kfaas local reads ConfigMaps from the YAML files, e.g. the output of `kubectl create configmap {map_name} --from-file=src/ --dry-run=client -o yaml`)"
        ));
    };
    let text = map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let binary = map
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()));
    write_code(function, "code.configMap", text.chain(binary)).map(Some)
}

/// Writes a function's code files into a folder of its own under the temp folder.
fn write_code<'a>(
    function: &Function,
    what: &str,
    files: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir()
        .join(format!("kfaas-{}", std::process::id()))
        .join(name(&function.metadata));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot write {what} to {}: {e}", dir.display()))?;
    for (file, content) in files {
        if file.is_empty() || file.contains('/') || file.contains("..") {
            return Err(format!(
                "{what} file name {file:?} must be a plain file name"
            ));
        }
        std::fs::write(dir.join(file), content)
            .map_err(|e| format!("cannot write {what} file {file}: {e}"))?;
    }
    Ok(dir)
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

    #[test]
    fn code_from_a_config_map_in_the_folder_runs_as_on_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The ConfigMap comes after the Function that uses it, in another file.
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: kfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: cm-fn}\nspec: {runtime: nodejs, handler: index.handler, code: {configMap: cm-fn-code}}\n---\napiVersion: kfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: lost}\nspec: {runtime: nodejs, handler: index.handler, code: {configMap: nowhere}}\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-fn-code}\ndata: {index.js: 'exports.handler = async () => 1;'}\nbinaryData: {logo.bin: AAEC}\n",
        )
        .expect("write");
        let (config, problems) = load_dir(dir.path());
        let code = config.code_dirs.get("cm-fn").expect("code folder");
        assert_eq!(
            std::fs::read_to_string(code.join("index.js")).expect("index.js"),
            "exports.handler = async () => 1;"
        );
        assert_eq!(
            std::fs::read(code.join("logo.bin")).expect("logo.bin"),
            [0, 1, 2]
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].contains("Function/lost")
                && text[0].contains("code.configMap \"nowhere\" is not in this folder"),
            "{text:?}"
        );
    }
}
