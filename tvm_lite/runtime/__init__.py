"""tvm_lite.runtime"""
