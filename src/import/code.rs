//! `--code configmap`: each function's code folder becomes a ConfigMap (`code.configMap`), so
//! the output runs on a cluster as well as with `kfaas local`, which reads ConfigMaps too. This
//! step reads files; the conversion before it does not.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    ByteString, api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{Conversion, Warning, names};
use crate::{api::FunctionCode, objects::KfaasObject};

/// What the API server accepts in one object (ConfigMaps are limited to 1 MiB).
const MAX_BYTES: usize = 1024 * 1024 - 16 * 1024;

/// Replaces each `code.path` (relative to `output_dir`) with a ConfigMap of the folder's files.
/// Functions that share a folder share its ConfigMap. A folder that does not fit (subfolders,
/// more than about 1 MiB, file names a ConfigMap key cannot hold) keeps `code.path`, with a
/// warning.
pub fn into_config_maps(conversion: &mut Conversion, output_dir: &Path) {
    let mut made: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut maps = Vec::new();
    for object in &mut conversion.objects {
        let KfaasObject::Function(function) = object else {
            continue;
        };
        let name = function.metadata.name.clone().unwrap_or_default();
        let Some(path) = function.spec.code.as_ref().and_then(|c| c.path.clone()) else {
            continue;
        };
        // Lexically: the output folder may not exist yet, so `..` cannot go through it.
        let folder = lexical(&output_dir.join(&path));
        let map_name = match made.get(&folder) {
            Some(existing) => existing.clone(),
            None => match read_folder(&folder) {
                Ok((data, binary)) => {
                    let map_name = names::join(&[&name, "code"]);
                    maps.push(KfaasObject::ConfigMap(ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(map_name.clone()),
                            ..ObjectMeta::default()
                        },
                        data: (!data.is_empty()).then_some(data),
                        binary_data: (!binary.is_empty()).then_some(binary),
                        ..ConfigMap::default()
                    }));
                    made.insert(folder.clone(), map_name.clone());
                    map_name
                }
                Err(why) => {
                    conversion.warnings.push(Warning {
                        resource: format!("Function/{name}"),
                        property: "code.path".into(),
                        message: format!("kept code.path {path} (not a ConfigMap): {why}"),
                    });
                    continue;
                }
            },
        };
        function.spec.code = Some(FunctionCode {
            config_map: Some(map_name),
            ..FunctionCode::default()
        });
    }
    conversion.objects.extend(maps);
}

fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

type Files = (BTreeMap<String, String>, BTreeMap<String, ByteString>);

fn read_folder(folder: &Path) -> Result<Files, String> {
    let entries =
        std::fs::read_dir(folder).map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
    let (mut data, mut binary) = (BTreeMap::new(), BTreeMap::new());
    let mut total = 0;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        if kind.is_dir() {
            return Err(format!(
                "it has the subfolder {file} and ConfigMap keys are flat (bundle the code first)"
            ));
        }
        if !file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!("{file:?} cannot be a ConfigMap key"));
        }
        let bytes = std::fs::read(entry.path()).map_err(|e| format!("cannot read {file}: {e}"))?;
        total += bytes.len();
        if total > MAX_BYTES {
            return Err("its files exceed a ConfigMap's 1 MiB (use an image instead)".into());
        }
        match String::from_utf8(bytes) {
            Ok(text) => {
                data.insert(file, text);
            }
            Err(e) => {
                binary.insert(file, ByteString(e.into_bytes()));
            }
        }
    }
    Ok((data, binary))
}
