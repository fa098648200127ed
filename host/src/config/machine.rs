//! A build machine's fields as the configuration (`[[machines.machine]]`)
//! or one line of a machines file gives them; `machines` checks them and
//! makes a machine of them (`MachineFields::into_spec`).

/// Fields of a machine as the TOML configuration or one line gives them.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineFields {
    pub uri: String,
    pub systems: Vec<String>,
    pub ssh_key: String,
    pub max_jobs: Option<usize>,
    pub speed_factor: Option<f64>,
    pub supported_features: Vec<String>,
    pub mandatory_features: Vec<String>,
    pub public_host_key: String,
}
