"""tvm_lite.frontend"""
