"""tvm_lite.passes"""
