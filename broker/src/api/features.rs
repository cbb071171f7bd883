//! UpdateFeatures: raising or lowering the cluster's finalized feature levels
//! (`kafka-features.sh upgrade`, `downgrade`, `--dry-run`). DescribeFeatures is ApiVersions.

use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::controller::features::{FeatureUpdate, UpgradeType};
use crate::security::authorizer::Operation;

/// As Kafka's controller answers: the outcome of the whole request at the top, and (before
/// v2) a result per feature once it succeeded.
pub(super) async fn update(
    broker: &Broker,
    context: &RequestContext,
    request: UpdateFeaturesRequest,
    version: i16,
) -> UpdateFeaturesResponse {
    if !context.allowed_on_cluster(broker, Operation::Alter) {
        return UpdateFeaturesResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(&format!(
                "{} may not alter the cluster",
                context.principal
            ))));
    }
    let updates: Vec<FeatureUpdate> = request
        .feature_updates
        .iter()
        .map(|u| FeatureUpdate {
            name: u.feature.to_string(),
            level: u.max_version_level,
            upgrade: UpgradeType::from_request(version, u.upgrade_type, u.allow_downgrade),
        })
        .collect();
    let mut names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        return UpdateFeaturesResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(str_bytes(&format!(
                "Feature {} appears more than once in the request",
                twice[0]
            ))));
    }
    let features: Vec<String> = updates.iter().map(|u| u.name.clone()).collect();
    match broker.update_features(updates, request.validate_only).await {
        Ok(()) => UpdateFeaturesResponse::default().with_results(
            features
                .iter()
                .map(|name| UpdatableFeatureResult::default().with_feature(str_bytes(name)))
                .collect(),
        ),
        Err(e) => {
            tracing::info!(error = %e.message, "UpdateFeatures refused");
            UpdateFeaturesResponse::default()
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(&e.message)))
        }
    }
}
