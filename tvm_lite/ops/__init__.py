"""tvm_lite.ops"""
