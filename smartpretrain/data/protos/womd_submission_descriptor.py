"""Serialized descriptor of ``womd_submission.proto``; made by scripts/gen_womd_schema.py; do not edit."""

# ruff: noqa: E501
# fmt: off
SERIALIZED = (
    b'\n\x15womd_submission.proto\x12\x12waymo.open_dataset"J\n\nTrajectory\x12\x1d\n\x08center_x\x18\x02 \x03(\x02B\x02\x10\x01R'
    b'\x07centerX\x12\x1d\n\x08center_y\x18\x03 \x03(\x02B\x02\x10\x01R\x07centerY"r\n\x10ScoredTrajectory\x12>\n\ntrajectory\x18\x01 \x01(\x0b2'
    b'\x1e.waymo.open_dataset.TrajectoryR\ntrajectory\x12\x1e\n\nconfidence\x18\x02 \x01(\x02R\nconfidence"\x7f\n\x16S'
    b'ingleObjectPrediction\x12\x1b\n\tobject_id\x18\x01 \x01(\x05R\x08objectId\x12H\n\x0ctrajectories\x18\x02 \x03(\x0b2$.waymo'
    b'.open_dataset.ScoredTrajectoryR\x0ctrajectories"]\n\rPredictionSet\x12L\n\x0bpredictions\x18\x01 \x03'
    b'(\x0b2*.waymo.open_dataset.SingleObjectPredictionR\x0bpredictions"o\n\x10ObjectTrajectory\x12'
    b'\x1b\n\tobject_id\x18\x01 \x01(\x05R\x08objectId\x12>\n\ntrajectory\x18\x02 \x01(\x0b2\x1e.waymo.open_dataset.Trajectory'
    b'R\ntrajectory"\x81\x01\n\x15ScoredJointTrajectory\x12H\n\x0ctrajectories\x18\x02 \x03(\x0b2$.waymo.open_datase'
    b't.ObjectTrajectoryR\x0ctrajectories\x12\x1e\n\nconfidence\x18\x03 \x01(\x02R\nconfidence"k\n\x0fJointPredict'
    b'ion\x12X\n\x12joint_trajectories\x18\x01 \x03(\x0b2).waymo.open_dataset.ScoredJointTrajectoryR\x11join'
    b'tTrajectories"\xf7\x01\n\x1cChallengeScenarioPredictions\x12\x1f\n\x0bscenario_id\x18\x01 \x01(\tR\nscenarioId\x12'
    b'R\n\x12single_predictions\x18\x02 \x01(\x0b2!.waymo.open_dataset.PredictionSetH\x00R\x11singlePredicti'
    b'ons\x12P\n\x10joint_prediction\x18\x03 \x01(\x0b2#.waymo.open_dataset.JointPredictionH\x00R\x0fjointPredi'
    b'ctionB\x10\n\x0eprediction_set"\xfe\x05\n\x19MotionChallengeSubmission\x12c\n\x14scenario_predictions\x18\x01 '
    b'\x03(\x0b20.waymo.open_dataset.ChallengeScenarioPredictionsR\x13scenarioPredictions\x12e\n\x0fsu'
    b'bmission_type\x18\x02 \x01(\x0e2<.waymo.open_dataset.MotionChallengeSubmission.SubmissionTyp'
    b'eR\x0esubmissionType\x12!\n\x0caccount_name\x18\x03 \x01(\tR\x0baccountName\x12,\n\x12unique_method_name\x18\x04 \x01(\t'
    b'R\x10uniqueMethodName\x12\x18\n\x07authors\x18\x05 \x03(\tR\x07authors\x12 \n\x0baffiliation\x18\x06 \x01(\tR\x0baffiliation\x12 '
    b'\n\x0bdescription\x18\x07 \x01(\tR\x0bdescription\x12\x1f\n\x0bmethod_link\x18\x08 \x01(\tR\nmethodLink\x12&\n\x0fuses_lidar_'
    b'data\x18\t \x01(\x08R\rusesLidarData\x12(\n\x10uses_camera_data\x18\n \x01(\x08R\x0eusesCameraData\x12A\n\x1duses_publ'
    b'ic_model_pretraining\x18\x0b \x01(\x08R\x1ausesPublicModelPretraining\x120\n\x14num_model_parameters\x18\x0c'
    b' \x01(\tR\x12numModelParameters\x12,\n\x12public_model_names\x18\r \x03(\tR\x10publicModelNames"P\n\x0eSubmis'
    b'sionType\x12\x0b\n\x07UNKNOWN\x10\x00\x12\x15\n\x11MOTION_PREDICTION\x10\x01\x12\x1a\n\x16INTERACTION_PREDICTION\x10\x02'
)
