import CLibUV

/// Closes a libuv handle that was allocated with `UnsafeMutablePointer.allocate` and whose `data`, if set, holds
/// a retained reference to its Swift owner (`Unmanaged.passRetained`): once libuv has finished with it, the
/// close callback releases the owner and frees the handle's memory. The one way this package closes its handles.
func uvCloseReleasingOwner<Handle>(_ handle: UnsafeMutablePointer<Handle>) {
    let base = UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)
    uv_close(base) { handle in
        if let owner = handle!.pointee.data {
            Unmanaged<AnyObject>.fromOpaque(owner).release()
        }
        UnsafeMutableRawPointer(handle!).deallocate()
    }
}
