"""tvm_lite.backends"""
