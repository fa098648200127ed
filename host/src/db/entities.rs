//! sea-orm entities, one module per table of `migrations/`. Only the `db`
//! part uses them; other parts see the typed values of `db::*`.

pub mod project {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "projects")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub display_name: String,
        pub description: String,
        pub homepage: String,
        pub owner: String,
        pub enabled: bool,
        pub hidden: bool,
        pub enable_dynamic_run_command: bool,
        pub declarative_file: Option<String>,
        pub declarative_type: Option<String>,
        pub declarative_value: Option<String>,
        /// JSON: release-set name to its definition (see `db/releases.rs`).
        pub release_sets: Option<String>,
        /// Why the declarative spec was last refused (`None`: it applied).
        pub declarative_error: Option<String>,
        pub declarative_checked_time: Option<i64>,
        /// `static` or `generator`: what the spec read last was.
        pub declarative_source: Option<String>,
        /// The last build of the `.jobsets` generator job that was dealt
        /// with, and how it had finished (`STATUS@STOPTIME`): a restarted
        /// build keeps its id.
        pub declarative_build: Option<i64>,
        pub declarative_build_finish: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod jobset {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobsets")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub project_id: i64,
        pub name: String,
        pub description: String,
        pub nixexpr_input: String,
        pub nixexpr_path: String,
        pub error_msg: Option<String>,
        pub error_time: Option<i64>,
        pub last_checked_time: Option<i64>,
        pub last_check_outcome: Option<String>,
        pub trigger_time: Option<i64>,
        pub force_eval: bool,
        pub enabled: i32,
        pub enable_email: bool,
        pub hidden: bool,
        pub email_override: String,
        pub keep_nr: i32,
        pub check_interval: i32,
        pub scheduling_shares: i32,
        pub fetch_error_msg: Option<String>,
        pub start_time: Option<i64>,
        #[sea_orm(column_name = "type")]
        pub kind: i32,
        pub flake: Option<String>,
        pub enable_dynamic_run_command: bool,
        /// While it is evaluated: jobs evaluated and known so far.
        pub eval_evaluated: Option<i64>,
        pub eval_total: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(belongs_to = "super::project::Entity", from = "Column::ProjectId", to = "super::project::Column::Id")]
        Project,
    }

    impl Related<super::project::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Project.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod jobset_input {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobset_inputs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub jobset_id: i64,
        pub name: String,
        #[sea_orm(column_name = "type")]
        pub kind: String,
        pub value: String,
        pub email_responsible: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod jobset_eval {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobset_evals")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub jobset_id: i64,
        pub timestamp: i64,
        pub checkout_time: i64,
        pub eval_time: i64,
        pub has_new_builds: bool,
        pub hash: String,
        pub nr_builds: i32,
        pub nr_errors: i32,
        pub flake: Option<String>,
        /// Kept by triggers (migration 13) as members' builds finish,
        /// fail, are cancelled or restarted.
        pub nr_finished: i32,
        pub nr_succeeded: i32,
        /// The evaluation this one's new builds were told apart from, when
        /// recorded (migration 15; NULL before it and for a jobset's first).
        pub previous_eval_id: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::jobset_eval_member::Entity")]
        Members,
        #[sea_orm(belongs_to = "super::jobset::Entity", from = "Column::JobsetId", to = "super::jobset::Column::Id")]
        Jobset,
    }

    impl Related<super::jobset_eval_member::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Members.def()
        }
    }

    impl Related<super::jobset::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Jobset.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod jobset_eval_input {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobset_eval_inputs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub eval_id: i64,
        pub name: String,
        #[sea_orm(column_name = "type")]
        pub kind: String,
        pub uri: Option<String>,
        pub revision: Option<String>,
        pub value: Option<String>,
        pub dependency: Option<i64>,
        pub path: Option<String>,
        pub sha256_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod jobset_eval_member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobset_eval_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub eval_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub build_id: i64,
        pub is_new: bool,
        /// For a new member, the build its job had in the evaluation
        /// before (`jobset_evals.previous_eval_id`); NULL for a job new
        /// then.
        pub previous_build_id: Option<i64>,
        /// For a new member with a predecessor: whether both builds have
        /// finished, one succeeding and the other not. Kept by triggers
        /// (migration 16), never written here.
        pub outcome_changed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(belongs_to = "super::build::Entity", from = "Column::BuildId", to = "super::build::Column::Id")]
        Build,
        #[sea_orm(
            belongs_to = "super::jobset_eval::Entity",
            from = "Column::EvalId",
            to = "super::jobset_eval::Column::Id"
        )]
        Eval,
    }

    impl Related<super::build::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Build.def()
        }
    }

    impl Related<super::jobset_eval::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Eval.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod build {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "builds")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub finished: bool,
        pub timestamp: i64,
        pub jobset_id: i64,
        pub job: String,
        pub nix_name: String,
        pub description: Option<String>,
        pub drv_path: String,
        pub system: String,
        pub license: Option<String>,
        pub homepage: Option<String>,
        pub maintainers: Option<String>,
        pub max_silent: i32,
        pub timeout: i32,
        pub is_channel: bool,
        pub is_aggregate: bool,
        pub priority: i32,
        pub global_priority: i64,
        pub start_time: Option<i64>,
        pub stop_time: Option<i64>,
        pub is_cached_build: Option<bool>,
        pub build_status: Option<i32>,
        pub size: Option<i64>,
        pub closure_size: Option<i64>,
        pub release_name: Option<String>,
        pub keep: bool,
        /// What was refused or cut of what the build left in its outputs,
        /// one sentence a line.
        pub output_errors: Option<String>,
        /// Its outputs are gone from the store (collected).
        pub outputs_collected: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::jobset_eval_member::Entity")]
        Members,
        #[sea_orm(belongs_to = "super::jobset::Entity", from = "Column::JobsetId", to = "super::jobset::Column::Id")]
        Jobset,
    }

    impl Related<super::jobset_eval_member::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Members.def()
        }
    }

    impl Related<super::jobset::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Jobset.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod build_output {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "build_outputs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub build_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub path: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(belongs_to = "super::build::Entity", from = "Column::BuildId", to = "super::build::Column::Id")]
        Build,
    }

    impl Related<super::build::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Build.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod build_step {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "build_steps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub build_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub step_nr: i32,
        #[sea_orm(column_name = "type")]
        pub kind: i32,
        pub drv_path: String,
        pub busy: bool,
        pub status: Option<i32>,
        pub error_msg: Option<String>,
        pub start_time: Option<i64>,
        pub stop_time: Option<i64>,
        pub machine: String,
        pub system: Option<String>,
        pub propagated_from: Option<i64>,
        pub times_built: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod build_step_output {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "build_step_outputs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub build_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub step_nr: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub path: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod build_product {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "build_products")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub build_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub product_nr: i32,
        #[sea_orm(column_name = "type")]
        pub kind: String,
        pub subtype: String,
        pub file_size: Option<i64>,
        pub sha256_hash: Option<String>,
        pub path: String,
        pub name: String,
        pub default_path: String,
        /// Why the product's path is not served (it leads out of its output).
        pub error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod build_metric {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "build_metrics")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub build_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub unit: Option<String>,
        pub value: f64,
        pub project: String,
        pub jobset: String,
        pub job: String,
        pub timestamp: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod aggregate_constituent {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "aggregate_constituents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub aggregate_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub constituent_id: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod failed_path {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "failed_paths")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub path: String,
        pub time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod evaluation_error {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "evaluation_errors")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub jobset_id: i64,
        pub eval_id: Option<i64>,
        pub job: Option<String>,
        pub message: String,
        pub time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub username: String,
        pub full_name: String,
        pub email: String,
        pub password_hash: Option<String>,
        pub created_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user_role {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_roles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub role: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod project_member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "project_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub project_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: String,
        pub user_id: i64,
        pub created_time: i64,
        pub expires_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub name: String,
        pub digest: String,
        pub scopes: String,
        pub created_time: i64,
        pub expires_time: Option<i64>,
        pub last_used_time: Option<i64>,
        pub revoked: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod plugin_kv {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "plugin_kv")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub plugin: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: Vec<u8>,
        pub updated_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub kind: String,
        pub time: i64,
        pub jobset_id: Option<i64>,
        pub eval_id: Option<i64>,
        pub build_id: Option<i64>,
        pub step_nr: Option<i32>,
        pub data: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod notifier_cursor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifier_cursors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub notifier: String,
        pub cursor: i64,
        pub delivered: i64,
        pub last_delivery: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod notifier_pending {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifier_pending")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub notifier: String,
        pub event_id: i64,
        pub ordering_key: String,
        pub attempts: i32,
        pub next_attempt: i64,
        pub first_failure: i64,
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cache_path {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cache_paths")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash_part: String,
        pub path: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
